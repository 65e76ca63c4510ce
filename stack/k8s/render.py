"""The AFTER topology as Kubernetes manifests, from the same Topology object the lab runs.

Every timeout, retry and limit the lab uses comes from its one source: ApiSpec (drain
deadline, memory limit, pool and start deadlines), the tuned nginx preset
(stack/components/nginx.py: retries, timeouts, upstream keep-alive), Patroni's config
(stack/components/patroni.py: leader TTL, loop wait, synchronous mode), the cache's redis.conf
(stack/components/redis_server.py) and the SLO rules (stack/analysis/slo.py) at real windows.
What the topology does not hold (an image, a namespace, a CPU request, how far to autoscale)
comes from K8sOptions, whose defaults docs/kubernetes.md lists.

`render()` is a pure function of the topology and the options: it returns the objects per file
and the notes on values Kubernetes can only approximate (nginx takes milliseconds, ingress-nginx
whole seconds). A topology it cannot express is refused with the field's name.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stack.analysis.slo import SloSettings, rule_groups
from stack.components import nginx as nginx_conf
from stack.components import patroni as patroni_conf
from stack.components import redis_server as redis_conf
from stack.components.postgres import API_ROLE, BATCH_ROLE, DB_NAME
from stack.errors import ConfigError
from stack.topology import API_KEEP_ALIVE_S, PrometheusSpec, Topology

PART_OF = "uptime-playbook"
API = "fraud-api"
CACHE = "fraud-cache"
TEAM = "fraud"
DB = f"{TEAM}-db"  # the operator wants "<teamId>-<name>"
DB_OWNER = "fraud_owner"
API_PORT, ADMIN_PORT = 8000, 8001
SETTINGS_DIR = "/etc/stack"
MODEL_DIR = "/app/models"
INGRESS_NGINX = "nginx.ingress.kubernetes.io/"
SLOTS = ("blue", "green")  # stack/api/state.py's colours, here one Deployment each
REAL_HOUR_S = 3600.0  # SLO windows at real time: one playbook hour is an hour
SCRAPE_LABEL = {"uptime-playbook/scrape": "true"}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_CPU = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]{1,3})?)$")
_SIZE = re.compile(r"^[0-9]+(Ki|Mi|Gi|Ti)$")
_DURATION = re.compile(r"^[0-9]+(ms|s|m|h)$")


def _token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class K8sOptions:
    """What a cluster needs that the lab's topology does not say."""

    namespace: str = PART_OF
    image: str = "uptime-playbook-api:0.1.0"  # built by the team: the package and models/
    slot: str = "blue"  # the colour the fraud-api Service points at
    model_version: str | None = None  # None: the image's deployed model
    host: str | None = None  # the Ingress host (None: any host)
    ingress_class: str = "nginx"
    max_replicas: int | None = None  # None: twice the topology's replicas
    cpu_request: str = "500m"
    cpu_target_percent: int = 70
    prestop_sleep_s: int = 5  # time for the ingress to see the pod leave its endpoints
    db_volume: str = "5Gi"
    postgres_version: str = "17"
    redis_image: str = "redis:7.4"
    scrape_interval: str = "30s"
    blackbox_url: str = "prometheus-blackbox-exporter.monitoring.svc:9115"
    exact: bool = False  # refuse every value Kubernetes can only approximate
    token: Callable[[], str] = field(default=_token, compare=False, repr=False)

    def check(self) -> None:
        """Refuse a bad option with its command-line name."""
        def bad(flag: str, msg: str) -> ConfigError:
            return ConfigError(msg, field=flag, source="stackctl render k8s")

        if not _DNS_LABEL.match(self.namespace):
            raise bad("--namespace", f"not a DNS label: {self.namespace!r}")
        if self.slot not in SLOTS:
            raise bad("--slot", f"must be one of {', '.join(SLOTS)}, got {self.slot!r}")
        if self.host is not None and not _HOST.match(self.host):
            raise bad("--host", f"not a DNS name: {self.host!r}")
        if not self.image or any(c.isspace() for c in self.image):
            raise bad("--image", f"not an image reference: {self.image!r}")
        if not _CPU.match(self.cpu_request):
            raise bad("--cpu-request", f"not a CPU quantity: {self.cpu_request!r}")
        if not 1 <= self.cpu_target_percent <= 100:
            raise bad("--cpu-target", f"must be 1..100, got {self.cpu_target_percent}")
        if not 0 <= self.prestop_sleep_s <= 60:
            raise bad("--prestop-sleep", f"must be 0..60 s, got {self.prestop_sleep_s}")
        if not _SIZE.match(self.db_volume):
            raise bad("--db-volume", f"not a size like 5Gi: {self.db_volume!r}")
        if self.postgres_version not in ("14", "15", "16", "17", "18"):
            raise bad("--postgres-version", f"the operator runs 14..18, got "
                      f"{self.postgres_version!r}")
        if not _DURATION.match(self.scrape_interval):
            raise bad("--scrape-interval", f"not a duration like 30s: {self.scrape_interval!r}")
        if self.model_version is not None and not re.match(r"^v[0-9]+$", self.model_version):
            raise bad("--model-version", f"expected a version like v2, got "
                      f"{self.model_version!r}")


@dataclass(frozen=True)
class Note:
    """A topology value Kubernetes carries only approximately."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass
class Rendered:
    """The objects of each file, in the order to apply them, and the notes."""

    files: dict[str, list[dict[str, Any]]]
    notes: list[Note]
    topology: str
    options: K8sOptions


class _Notes(list):
    def whole_seconds(self, value: float, field: str, what: str, *,
                      below: float | None = None) -> int:
        """`value` in whole seconds (ingress-nginx and probes take no fractions): rounded up,
        with a note, unless that would reach `below`."""
        n = math.ceil(value - 1e-9)
        if below is not None and n >= below:
            n = math.floor(value)
        if n != value:
            self.append(Note(field, f"{value:g} s rendered as {n} s: {what} takes whole "
                                    "seconds"))
        return max(n, 1)


def _meta(name: str, namespace: str | None, component: str, app: str | None = None,
          **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = {"app.kubernetes.io/name": app or name, "app.kubernetes.io/component": component,
                      "app.kubernetes.io/part-of": PART_OF, **labels}
    return meta


def _refuse(topo: Topology) -> None:
    """What the renderer cannot express, named by field."""
    if topo.nginx is None:
        raise ConfigError("the Kubernetes form is the AFTER topology: it needs the load "
                          "balancer (an Ingress in front of the replicas); use "
                          "--topology after", field="nginx", source=topo.name)
    if topo.nginx.preset != "tuned":
        raise ConfigError(f"preset {topo.nginx.preset!r} has no Kubernetes form: its /health "
                          "is answered by nginx itself and its upstream's max_fails are "
                          "nginx's own accounting, where Kubernetes uses readiness probes; "
                          "render the 'tuned' preset", field="nginx.preset", source=topo.name)
    if topo.api.replicas < 2:
        raise ConfigError(f"{topo.api.replicas} replica: a disruption budget and a rolling "
                          "update that never drops below capacity need at least 2",
                          field="api.replicas", source=topo.name)
    if topo.postgres.synchronous and not topo.postgres.standby:
        raise ConfigError("synchronous replication needs a standby (postgres.standby: true)",
                          field="postgres.synchronous", source=topo.name)


# -- the API ------------------------------------------------------------------------------
def api_settings(topo: Topology, opt: K8sOptions, admin_token: str) -> dict[str, Any]:
    """The replica's settings file (stack/api/settings.py ApiSettings) for one colour. The
    database password is not in it: libpq reads PGPASSWORD, set from the operator's secret."""
    api = topo.api
    conninfo = (f"host={DB} port=5432 dbname={DB_NAME} user={API_ROLE} "
                f"connect_timeout={api.db_connect_timeout_s} target_session_attrs=read-write")
    return {
        "name": f"{API}-{opt.slot}", "host": "0.0.0.0", "port": API_PORT,
        "admin_port": ADMIN_PORT, "admin_token": admin_token, "db_conninfo": conninfo,
        "db_pool_min": min(api.db_pool_min, api.db_pool_max), "db_pool_max": api.db_pool_max,
        "db_pool_timeout_s": api.db_pool_timeout_s,
        "db_statement_timeout_ms": api.db_statement_timeout_ms,
        "redis_url": f"redis://{CACHE}:6379/0" if topo.redis else None,
        "redis_timeout_s": api.redis_timeout_s, "cache_ttl_s": api.cache_ttl_s,
        "model_dir": MODEL_DIR, "model_version": opt.model_version,
        "sentry_dsn": None, "sentry_events_dir": None, "run_dir": None,
    }


def _api_objects(topo: Topology, opt: K8sOptions,
                 notes: _Notes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(this colour's objects, the switch: the Service the Ingress sends to)."""
    api, ngx = topo.api, topo.nginx
    assert ngx is not None
    ns, slot = opt.namespace, opt.slot
    name = f"{API}-{slot}"
    selector = {"app.kubernetes.io/name": API, "uptime-playbook/slot": slot}
    settings = json.dumps(api_settings(topo, opt, opt.token()), indent=2)
    probe_timeout = notes.whole_seconds(ngx.read_timeout_s, "nginx.read_timeout_s",
                                        "a probe's timeoutSeconds")
    drain = notes.whole_seconds(api.graceful_timeout_s, "api.graceful_timeout_s",
                                "terminationGracePeriodSeconds")
    start = notes.whole_seconds(api.start_deadline_s, "api.start_deadline_s",
                                "a startup probe (1 s period)")
    pod_labels = {**selector, "app.kubernetes.io/part-of": PART_OF,
                  "app.kubernetes.io/component": "api"}
    secret = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": _meta(f"{name}-settings", ns, "api", API, **{"uptime-playbook/slot": slot}),
        "type": "Opaque",
        "stringData": {"settings.json": settings},
    }
    container = {
        "name": "api",
        "image": opt.image,
        "command": ["python", "-m", "stack.api.serve", "--settings",
                    f"{SETTINGS_DIR}/settings.json"],
        "ports": [{"name": "http", "containerPort": API_PORT},
                  {"name": "admin", "containerPort": ADMIN_PORT}],
        "env": [
            {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {
                "name": f"{API_ROLE}.{DB}.credentials.postgresql.acid.zalan.do",
                "key": "password"}}},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        # the lab's watchdog kills a replica past its memory limit; here the kernel does
        "resources": {"requests": {"cpu": opt.cpu_request, "memory": f"{api.memory_limit_mb}Mi"},
                      "limits": {"memory": f"{api.memory_limit_mb}Mi"}},
        # the lab's start deadline: /healthz within it, or the pod is restarted
        "startupProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                         "periodSeconds": 1, "failureThreshold": start,
                         "timeoutSeconds": 1},
        # nginx's max_fails/fail_timeout become readiness: out of the endpoints after
        # max_fails failed checks, checked again every fail_timeout
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"},
                           "periodSeconds": ngx.fail_timeout_s,
                           "failureThreshold": max(1, ngx.max_fails),
                           "successThreshold": 1, "timeoutSeconds": probe_timeout},
        # a hung worker (the lab's 'hang' fault) is restarted, not waited on forever
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                          "periodSeconds": 5, "failureThreshold": 3,
                          "timeoutSeconds": probe_timeout},
        # drain: stay up while the ingress stops sending, then SIGTERM makes uvicorn stop
        # accepting and finish what is in flight (stack/api/serve.py)
        "lifecycle": {"preStop": {"sleep": {"seconds": opt.prestop_sleep_s}}},
        "volumeMounts": [{"name": "settings", "mountPath": SETTINGS_DIR, "readOnly": True}],
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }
    if ngx.max_fails == 0:
        notes.append(Note("nginx.max_fails", "0 (never marked failed) rendered as a readiness "
                                              "failureThreshold of 1: Kubernetes always acts "
                                              "on readiness"))
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(name, ns, "api", API, **{"uptime-playbook/slot": slot}),
        "spec": {
            # no `replicas`: the HorizontalPodAutoscaler owns it (minReplicas below), so
            # re-applying this file never scales the API down
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            # a rolling update never drops below capacity: a new pod must be ready before
            # an old one goes
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {
                    "uptime-playbook/settings-sha256":
                        hashlib.sha256(settings.encode()).hexdigest()}},
                "spec": {
                    "terminationGracePeriodSeconds": opt.prestop_sleep_s + drain + 2,
                    "containers": [container],
                    "volumes": [{"name": "settings", "secret": {
                        "secretName": f"{name}-settings", "defaultMode": 0o440}}],
                    # two replicas on one node are one node failure from zero
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": selector}}],
                },
            },
        },
    }
    service_ports = [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    active = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(API, ns, "api"),
        # the blue/green switch: this selector's colour is the one the Ingress serves
        "spec": {"selector": selector, "ports": service_ports},
    }
    preview_meta = _meta(name, ns, "api-slot", API, **{"uptime-playbook/slot": slot})
    preview_meta["labels"].update(SCRAPE_LABEL)
    preview = {
        "apiVersion": "v1", "kind": "Service", "metadata": preview_meta,
        # this colour alone: smoke-test it here before the switch; Prometheus scrapes it
        "spec": {"selector": selector, "ports": service_ports},
    }
    pdb = {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": _meta(name, ns, "api", API, **{"uptime-playbook/slot": slot}),
        # a node drain takes one replica at a time, like the lab's rolling restart
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector},
                 "unhealthyPodEvictionPolicy": "AlwaysAllow"},
    }
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(name, ns, "api", API, **{"uptime-playbook/slot": slot}),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": api.replicas,
            "maxReplicas": opt.max_replicas or 2 * api.replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": opt.cpu_target_percent}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }
    if hpa["spec"]["maxReplicas"] < api.replicas:
        raise ConfigError(f"max replicas {hpa['spec']['maxReplicas']} is below the "
                          f"topology's {api.replicas}", field="--max-replicas",
                          source="stackctl render k8s")
    return [secret, deployment, preview, pdb, hpa], [active]


# -- the front door -----------------------------------------------------------------------
def _ingress_annotations(topo: Topology, notes: _Notes) -> dict[str, str]:
    ngx = topo.nginx
    assert ngx is not None
    secs = notes.whole_seconds
    if ngx.max_conns:
        notes.append(Note("nginx.max_conns", f"{ngx.max_conns} not rendered: ingress-nginx "
                          "balances in Lua and has no per-endpoint cap on requests in flight; "
                          "scale out instead (the HPA) and watch the replicas' in-flight "
                          "gauge"))
    return {
        INGRESS_NGINX + "proxy-connect-timeout": str(secs(
            ngx.connect_timeout_s, "nginx.connect_timeout_s", "ingress-nginx's proxy-connect-timeout")),
        INGRESS_NGINX + "proxy-send-timeout": str(secs(
            ngx.send_timeout_s, "nginx.send_timeout_s", "ingress-nginx's proxy-send-timeout")),
        INGRESS_NGINX + "proxy-read-timeout": str(secs(
            ngx.read_timeout_s, "nginx.read_timeout_s", "ingress-nginx's proxy-read-timeout")),
        INGRESS_NGINX + "proxy-next-upstream": nginx_conf.TUNED_NEXT_UPSTREAM,
        INGRESS_NGINX + "proxy-next-upstream-tries": str(ngx.next_upstream_tries),
        INGRESS_NGINX + "proxy-next-upstream-timeout": str(secs(
            ngx.next_upstream_timeout_s, "nginx.next_upstream_timeout_s",
            "ingress-nginx's proxy-next-upstream-timeout")),
        # upstream keep-alive needs HTTP/1.1 (ingress-nginx's default; said here)
        INGRESS_NGINX + "proxy-http-version": "1.1",
    }


def _ingress_objects(topo: Topology, opt: K8sOptions, notes: _Notes) -> list[dict[str, Any]]:
    annotations = _ingress_annotations(topo, notes)

    def ingress(name: str, path: str, path_type: str, extra: dict[str, str]) -> dict[str, Any]:
        rule: dict[str, Any] = {"http": {"paths": [{
            "path": path, "pathType": path_type,
            "backend": {"service": {"name": API, "port": {"name": "http"}}}}]}}
        if opt.host:
            rule = {"host": opt.host, **rule}
        meta = _meta(name, opt.namespace, "ingress")
        meta["annotations"] = {**annotations, **extra}
        return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta,
                "spec": {"ingressClassName": opt.ingress_class, "rules": [rule]}}

    return [
        ingress(API, "/", "Prefix", {}),
        # /health: some replica says it is ready (tuned nginx proxies it to /readyz, trying
        # every replica: tries 0 is "no limit")
        ingress(f"{API}-health", "/health", "Exact",
                {INGRESS_NGINX + "rewrite-target": "/readyz",
                 INGRESS_NGINX + "proxy-next-upstream-tries": "0"}),
    ]


def _controller_configmap(topo: Topology, notes: _Notes) -> list[dict[str, Any]]:
    """ingress-nginx's own ConfigMap keys (controller-wide, not per Ingress): merge them into
    the controller's ConfigMap (Helm: controller.config)."""
    ngx = topo.nginx
    assert ngx is not None
    keepalive_timeout = notes.whole_seconds(
        ngx.keepalive_timeout_s, "nginx.keepalive_timeout_s",
        "ingress-nginx's upstream-keepalive-timeout", below=API_KEEP_ALIVE_S)
    shutdown = notes.whole_seconds(ngx.shutdown_timeout_s, "nginx.shutdown_timeout_s",
                                   "ingress-nginx's worker-shutdown-timeout")
    return [{
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _meta("ingress-nginx-controller", "ingress-nginx", "controller"),
        "data": {
            "upstream-keepalive-connections": str(ngx.keepalive),
            # below the replicas' own keep-alive (API_KEEP_ALIVE_S): nginx closes first
            "upstream-keepalive-timeout": str(keepalive_timeout),
            "worker-shutdown-timeout": f"{shutdown}s",
        },
    }]


# -- the cache ----------------------------------------------------------------------------
def redis_config(topo: Topology) -> str:
    """The lab's redis.conf (a cache: no snapshots, LRU eviction at maxmemory), listening on
    the pod's network instead of loopback."""
    assert topo.redis is not None
    out = []
    for line in redis_conf.render_config(6379, Path("/data"), topo.redis).splitlines():
        key = line.split(" ", 1)[0]
        if key == "bind":
            line = "bind * -::*"  # the pod's addresses; the Service is the only way in
        elif key == "protected-mode":
            line = "protected-mode no"
        elif line.startswith("#"):
            line = "# rendered by stackctl render k8s from the lab's redis.conf"
        out.append(line)
    return "\n".join(out) + "\n"


def _redis_objects(topo: Topology, opt: K8sOptions, notes: _Notes) -> list[dict[str, Any]]:
    spec = topo.redis
    assert spec is not None
    labels = {"app.kubernetes.io/name": CACHE}
    ping = notes.whole_seconds(spec.ping_timeout_s, "redis.ping_timeout_s",
                               "a probe's timeoutSeconds")
    stop = notes.whole_seconds(spec.stop_timeout_s, "redis.stop_timeout_s",
                               "terminationGracePeriodSeconds")
    start = notes.whole_seconds(spec.start_deadline_s, "redis.start_deadline_s",
                                "a startup probe (1 s period)")
    ping_cmd = {"exec": {"command": ["redis-cli", "ping"]}}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(CACHE, opt.namespace, "cache"),
         "data": {"redis.conf": redis_config(topo)}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": _meta(CACHE, opt.namespace, "cache"),
         "spec": {
             "replicas": 1,  # a cache: losing it costs latency, never data
             "selector": {"matchLabels": labels},
             "template": {
                 "metadata": {"labels": {**labels, "app.kubernetes.io/part-of": PART_OF}},
                 "spec": {
                     "terminationGracePeriodSeconds": stop,
                     "containers": [{
                         "name": "redis", "image": opt.redis_image,
                         "args": ["/etc/redis/redis.conf"],
                         "ports": [{"name": "redis", "containerPort": 6379}],
                         "startupProbe": {**ping_cmd, "periodSeconds": 1,
                                          "failureThreshold": start, "timeoutSeconds": ping},
                         "readinessProbe": {**ping_cmd, "periodSeconds": 2,
                                            "timeoutSeconds": ping},
                         # maxmemory plus room for Redis itself
                         "resources": {"requests": {"memory": f"{spec.maxmemory_mb + 32}Mi"},
                                       "limits": {"memory": f"{spec.maxmemory_mb + 64}Mi"}},
                         "volumeMounts": [{"name": "config", "mountPath": "/etc/redis"},
                                          {"name": "data", "mountPath": "/data"}],
                     }],
                     "volumes": [{"name": "config", "configMap": {"name": CACHE}},
                                 {"name": "data", "emptyDir": {}}],
                 },
             },
         }},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(CACHE, opt.namespace, "cache"),
         "spec": {"selector": labels, "ports": [{"name": "redis", "port": 6379,
                                                 "targetPort": "redis", "protocol": "TCP"}]}},
    ]


# -- the database -------------------------------------------------------------------------
LAB_ONLY_PARAMETERS = {"unix_socket_directories", "logging_collector", "log_min_messages",
                       "log_line_prefix"}


def patroni_settings(topo: Topology) -> tuple[dict[str, Any], dict[str, str]]:
    """Patroni's dynamic settings and Postgres' parameters, taken from the lab's own
    patroni.yml (stack/components/patroni.py render_config), minus what only a local lab
    needs (sockets, log files). Returns (patroni, parameters)."""
    conf = patroni_conf.render_config(
        "k8s", port=5432, rest_port=8008, etcd_address="kubernetes", data_dir=Path("/data"),
        bin_dir="", secrets={"lab": "", "replicator": ""},
        max_connections=topo.postgres.max_connections,
        synchronous=topo.postgres.synchronous, pgpass=Path("/tmp/pgpass"))
    dcs = conf["bootstrap"]["dcs"]
    if not dcs["postgresql"].get("use_pg_rewind"):
        raise ConfigError("the lab's Patroni config turned pg_rewind off; Spilo always uses "
                          "it", field="postgresql.use_pg_rewind", source="patroni.yml")
    patroni = {k: dcs[k] for k in ("ttl", "loop_wait", "retry_timeout",
                                   "maximum_lag_on_failover", "synchronous_mode",
                                   "synchronous_mode_strict")}
    if dcs["synchronous_mode"]:
        patroni["synchronous_node_count"] = 1
    params = {**dcs["postgresql"]["parameters"], **conf["postgresql"]["parameters"]}
    return patroni, {k: str(v) for k, v in params.items() if k not in LAB_ONLY_PARAMETERS}


def _postgres_objects(topo: Topology, opt: K8sOptions, notes: _Notes) -> list[dict[str, Any]]:
    patroni, params = patroni_settings(topo)
    if topo.postgres.batch_connection_limit >= 0:
        notes.append(Note("postgres.batch_connection_limit", (
            f"{topo.postgres.batch_connection_limit} is a role setting the operator does not "
            f"take: run ALTER ROLE {BATCH_ROLE} CONNECTION LIMIT "
            f"{topo.postgres.batch_connection_limit} once the cluster is up")))
    return [{
        "apiVersion": "acid.zalan.do/v1", "kind": "postgresql",
        "metadata": _meta(DB, opt.namespace, "database"),
        "spec": {
            "teamId": TEAM,
            # a primary and a standby, each a pod run by Patroni; the leader lock lives in
            # the Kubernetes API instead of etcd
            "numberOfInstances": 2 if topo.postgres.standby else 1,
            "volume": {"size": opt.db_volume},
            "postgresql": {"version": opt.postgres_version, "parameters": params},
            "patroni": patroni,
            "users": {DB_OWNER: [], API_ROLE: [], BATCH_ROLE: []},
            "databases": {DB_NAME: DB_OWNER},
        },
    }]


# -- monitoring ---------------------------------------------------------------------------
def slo_settings(topo: Topology) -> SloSettings:
    """The lab's SLO at real windows: one playbook hour is an hour (5m is 300s)."""
    spec = topo.prometheus or PrometheusSpec()
    return SloSettings(time_scale_s=REAL_HOUR_S, target=spec.slo_target,
                       latency_objective_s=spec.latency_objective_s)


def _plain(data: Any) -> Any:
    """Plain dicts, lists and strs (slo.py marks block strings with a str subclass)."""
    return json.loads(json.dumps(data))


def _monitoring_objects(topo: Topology, opt: K8sOptions, notes: _Notes) -> list[dict[str, Any]]:
    ns = opt.namespace
    probe_timeout = (topo.prometheus or PrometheusSpec()).probe_timeout_s
    target = (f"http://{opt.host}/health" if opt.host else
              "http://ingress-nginx-controller.ingress-nginx.svc/health")
    return [
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
         "metadata": _meta(API, ns, "monitoring"),
         "spec": {"selector": {"matchLabels": SCRAPE_LABEL},  # every colour's Service
                  "endpoints": [{"port": "http", "path": "/metrics",
                                 "interval": opt.scrape_interval}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
         "metadata": _meta(f"{API}-slo", ns, "monitoring"),
         "spec": _plain(rule_groups(slo_settings(topo)))},
        # the external uptime check, through the front door like a user
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "Probe",
         "metadata": _meta(f"{API}-uptime", ns, "monitoring"),
         "spec": {"prober": {"url": opt.blackbox_url}, "module": "http_2xx",
                  "interval": opt.scrape_interval,
                  "scrapeTimeout": f"{round(probe_timeout * 1000)}ms",
                  "targets": {"staticConfig": {"static": [target]}}}},
    ]


# -- the whole set --------------------------------------------------------------------------
def render(topo: Topology, opt: K8sOptions = K8sOptions()) -> Rendered:
    """Every object per file, in apply order. Refuses (ConfigError naming the field) a topology
    it cannot express, and with `opt.exact` also one it could only approximate."""
    opt.check()
    _refuse(topo)
    notes = _Notes()
    files: dict[str, list[dict[str, Any]]] = {
        "00-namespace.yaml": [{"apiVersion": "v1", "kind": "Namespace",
                               "metadata": _meta(opt.namespace, None, "namespace")}],
        "10-postgres.yaml": _postgres_objects(topo, opt, notes),
    }
    if topo.redis is not None:
        files["20-redis.yaml"] = _redis_objects(topo, opt, notes)
    # the colour first; the switch once its pods are ready and smoke-tested
    files[f"30-api-{opt.slot}.yaml"], files["35-api-switch.yaml"] = _api_objects(topo, opt,
                                                                                notes)
    files["40-ingress.yaml"] = _ingress_objects(topo, opt, notes)
    files["41-ingress-nginx-controller.yaml"] = _controller_configmap(topo, notes)
    files["50-monitoring.yaml"] = _monitoring_objects(topo, opt, notes)
    unique = list(dict.fromkeys(notes))
    if opt.exact and unique:
        first = unique[0]
        raise ConfigError(f"{first.message} (--exact refuses approximations)",
                          field=first.field, source=topo.name)
    return Rendered(files=files, notes=unique, topology=topo.name, options=opt)
