"""One typed description of a lab: which components run and every timeout and limit they use.

Configs (the API's settings, postgresql.conf, nginx.conf, ...) are rendered from this one
object. BEFORE is the flaky product of week 1; AFTER the redundant stack of weeks 2-4.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stack.errors import ConfigError, UnknownName


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# How long a replica keeps an idle keep-alive connection open. nginx must close its idle
# upstream connections sooner (NginxSpec.keepalive_timeout_s): if the replica closed first, a
# request nginx sends on the connection at that instant would be lost.
API_KEEP_ALIVE_S = 75.0


class ApiSpec(_Spec):
    """The uvicorn replicas serving the FastAPI app."""

    replicas: int = Field(1, ge=1, le=4)
    db_pool_min: int = Field(1, ge=0, le=100)
    db_pool_max: int = Field(8, ge=1, le=100)
    db_pool_timeout_s: float = Field(2.0, gt=0, le=60)
    db_statement_timeout_ms: int = Field(2000, ge=10, le=600_000)
    db_connect_timeout_s: int = Field(2, ge=1, le=60)
    redis_timeout_s: float = Field(0.05, gt=0, le=5)
    cache_ttl_s: int = Field(30, ge=1, le=86_400)
    memory_limit_mb: int = Field(700, ge=200, le=16_384)
    graceful_timeout_s: float = Field(5.0, ge=0, le=120)
    start_deadline_s: float = Field(30.0, gt=0, le=600)


class PostgresSpec(_Spec):
    """Postgres primary, and optionally a streaming-replication standby. With a standby the
    pair is run by Patroni over etcd (its leader lock decides the primary)."""

    standby: bool = False
    synchronous: bool = False
    max_connections: int = Field(40, ge=10, le=1000)
    start_deadline_s: float = Field(20.0, gt=0, le=600)
    n_customers: int = Field(2000, ge=10, le=1_000_000)
    # the role batch jobs connect as; a limit keeps them from taking the API's slots
    batch_connection_limit: int = Field(-1, ge=-1, le=1000)  # -1: no limit


class RedisSpec(_Spec):
    """The feature cache."""

    maxmemory_mb: int = Field(64, ge=8, le=4096)
    ping_timeout_s: float = Field(0.5, gt=0, le=10)
    stop_timeout_s: float = Field(5.0, gt=0, le=60)
    start_deadline_s: float = Field(10.0, gt=0, le=600)


class NginxSpec(_Spec):
    """The load balancer in front of the replicas."""

    preset: Literal["playbook", "tuned"] = "tuned"
    workers: int = Field(2, ge=1, le=8)
    worker_connections: int = Field(512, ge=16, le=65_536)
    # The settings below shape the 'tuned' preset; 'playbook' is rendered as printed.
    connect_timeout_s: float = Field(0.5, gt=0, le=60)
    send_timeout_s: float = Field(1.5, gt=0, le=600)
    read_timeout_s: float = Field(1.5, gt=0, le=600)
    max_fails: int = Field(1, ge=0, le=100)
    # nginx takes whole seconds here; short, because when a shared dependency fails every
    # replica answers 503 and all of them sit out this long after it recovers
    fail_timeout_s: int = Field(1, ge=1, le=3600)
    keepalive: int = Field(32, ge=1, le=1024)
    # Requests nginx has in flight to one replica's entry at once (its backup entry below
    # takes as many again); 0 is no cap. Beyond them nginx queues nothing: the request gets
    # the JSON 503 with Retry-After at once. Without a cap, an overload queues in the
    # replicas until read_timeout, and then every such request is re-sent to the other
    # replica and worked on twice: the backlog feeds itself and the lab does not recover
    # when the load falls back. 64 is far above what the course's rates keep in flight.
    max_conns: int = Field(64, ge=0, le=65_536)
    keepalive_timeout_s: float = Field(30.0, gt=0, lt=API_KEEP_ALIVE_S)  # idle upstream conns
    zone_kb: int = Field(64, ge=32, le=65_536)
    next_upstream_tries: int = Field(2, ge=0, le=10)
    next_upstream_timeout_s: float = Field(3.0, ge=0, le=600)
    # /health gives each replica this long: a frozen replica must cost less than the uptime
    # probe's timeout, so that the other replica's answer still arrives in time
    health_timeout_s: float = Field(0.3, gt=0, le=60)
    # both presets: how long old workers may finish in-flight requests on quit or reload
    shutdown_timeout_s: float = Field(10.0, gt=0, le=600)
    start_deadline_s: float = Field(10.0, gt=0, le=600)
    reload_deadline_s: float = Field(10.0, gt=0, le=600)
    http_timeout_s: float = Field(1.0, gt=0, le=60)  # the lab's own checks (status, version)


class PrometheusSpec(_Spec):
    """Prometheus, its exporters, the uptime probe and Alertmanager (week 3).

    The playbook's SLO windows (5m ... 3d) run in compressed time: `time_scale_s` real seconds
    stand for one playbook hour, so with 60 the lab's minutes stand for hours.
    """

    scrape_interval_s: float = Field(1.0, ge=0.1, le=60)
    evaluation_interval_s: float = Field(1.0, ge=0.1, le=60)
    time_scale_s: float = Field(60.0, gt=0, le=3600)
    slo_target: float = Field(0.999, gt=0.5, lt=1)
    latency_objective_s: float = Field(0.5, gt=0, le=60)
    probe_path: str = Field("/health", pattern=r"^/")
    probe_timeout_s: float = Field(0.8, gt=0, le=30)
    retention: str = Field("1d", pattern=r"^[0-9]+[smhdwy]$")
    alert_group_wait_s: float = Field(1.0, ge=0, le=600)
    alert_group_interval_s: float = Field(1.0, gt=0, le=600)
    alert_repeat_interval_s: float = Field(300.0, gt=0, le=86_400)
    exporters: bool = True  # nginx, postgres and redis exporters where those components run
    start_deadline_s: float = Field(20.0, gt=0, le=600)


class Topology(_Spec):
    """A whole lab."""

    name: str = Field("custom", pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    api: ApiSpec = ApiSpec()
    postgres: PostgresSpec = PostgresSpec()
    redis: RedisSpec | None = None
    nginx: NginxSpec | None = None
    prometheus: PrometheusSpec | None = None
    # a process supervisor (supervisord, as systemd's Restart=always) starts a crashed replica,
    # nginx or Redis again; without one, it stays down until someone restarts it
    supervise: bool = False

    def with_changes(self, **changes: object) -> "Topology":
        """A validated copy with dotted-path changes, e.g. ``{"api.replicas": 2}``."""
        data = self.model_dump()
        for dotted, value in changes.items():
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                if not isinstance(node.get(key), dict):
                    node[key] = {}
                node = node[key]
            node[leaf] = value
        return parse_topology(data, source="changes")


BEFORE = Topology(name="before")
AFTER = Topology(
    name="after",
    api=ApiSpec(replicas=2, db_pool_min=6, db_pool_max=8),
    postgres=PostgresSpec(standby=True, synchronous=True, batch_connection_limit=8),
    redis=RedisSpec(),
    nginx=NginxSpec(preset="tuned"),
    supervise=True,
)
# AFTER watched by Prometheus (weeks 3 and 4)
MONITORED = AFTER.model_copy(update={"name": "monitored", "prometheus": PrometheusSpec()})
PRESETS: dict[str, Topology] = {"before": BEFORE, "after": AFTER, "monitored": MONITORED}


def parse_topology(data: object, source: str = "topology") -> Topology:
    """Validate a mapping into a Topology; the error names the first bad field."""
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"{err['msg']} (got {err.get('input')!r})", field=field,
                          source=source) from None


def load_topology(name_or_path: str | Path | Topology) -> Topology:
    """A preset by name ('before', 'after') or a YAML file describing a Topology."""
    if isinstance(name_or_path, Topology):
        return name_or_path
    key = str(name_or_path)
    if key in PRESETS:
        return PRESETS[key]
    path = Path(key)
    if not path.suffix and not path.exists():
        raise UnknownName("topology", key, list(PRESETS))
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read topology file: {exc.strerror}", source=key) from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}", source=key,
                          line=None if line is None else line + 1) from None
    return parse_topology(data, source=key)
