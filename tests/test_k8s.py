"""stackctl render k8s: the AFTER topology as Kubernetes manifests, validated offline."""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import pytest
import yaml

from stack.analysis.slo import SloSettings, rule_groups
from stack.components import nginx as nginx_conf
from stack.components import patroni as patroni_conf
from stack.errors import ConfigError
from stack.k8s import K8sOptions, render, validate_all, validate_object, write_manifests
from stack.k8s import output as k8s_output
from stack.k8s.cli import add_parser
from stack.k8s.output import MARKER
from stack.topology import AFTER, BEFORE, MONITORED

OPT = K8sOptions(token=lambda: "test-token")


def objects(rendered, kind: str) -> list[dict]:
    return [o for objs in rendered.files.values() for o in objs if o["kind"] == kind]


def one(rendered, kind: str, name: str | None = None) -> dict:
    found = [o for o in objects(rendered, kind) if name in (None, o["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


@pytest.fixture(scope="module")
def after():
    return render(AFTER, OPT)


# -- every object validates ---------------------------------------------------------------
@pytest.mark.parametrize("version", ["1.30", "1.37"])
def test_every_object_validates_offline(after, version):
    checks = validate_all(after.files, version)
    kinds = {k.split(": ")[1].split("/")[0]: v for k, v in checks.items()}
    for core in ("Namespace", "Secret", "Deployment", "Service", "PodDisruptionBudget",
                 "HorizontalPodAutoscaler", "Ingress", "ConfigMap"):
        assert kinds[core].startswith(f"Kubernetes {version} schema, strict"), core
    for crd in ("PrometheusRule", "ServiceMonitor", "Probe"):
        assert "typed model of the prometheus-operator CRDs" in kinds[crd]
    assert "typed model of Zalando's postgresql CRD" in kinds["postgresql"]


def test_the_validators_catch_a_bad_field(after):
    dep = json.loads(json.dumps(one(after, "Deployment", "fraud-api-blue")))
    dep["spec"]["strategy"]["rollingUpdate"]["maxUnavialable"] = 0
    with pytest.raises(ConfigError, match="maxUnavialable"):
        validate_object(dep)
    rule = json.loads(json.dumps(one(after, "PrometheusRule")))
    rule["spec"]["groups"][0]["rules"][0]["exprs"] = "1"
    with pytest.raises(ConfigError) as err:
        validate_object(rule)
    assert err.value.field == "spec.groups[0].rules[0].exprs"
    pg = json.loads(json.dumps(one(after, "postgresql")))
    pg["spec"]["patroni"]["ttl"] = "20s"
    with pytest.raises(ConfigError) as err:
        validate_object(pg)
    assert err.value.field == "spec.patroni.ttl"
    pg = json.loads(json.dumps(one(after, "postgresql")))
    pg["metadata"]["name"] = "db"  # the operator wants the teamId as prefix
    with pytest.raises(ConfigError, match="teamId"):
        validate_object(pg)


# -- the lessons, each from the topology ---------------------------------------------------
def test_api_deployment_carries_the_lab_settings(after):
    api = AFTER.api
    dep = one(after, "Deployment", "fraud-api-blue")
    spec = dep["spec"]
    assert "replicas" not in spec  # the autoscaler owns it
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["failureThreshold"] == AFTER.nginx.max_fails
    assert c["readinessProbe"]["periodSeconds"] == AFTER.nginx.fail_timeout_s
    assert c["startupProbe"]["failureThreshold"] == math.ceil(api.start_deadline_s)
    assert c["resources"]["limits"]["memory"] == f"{api.memory_limit_mb}Mi"
    sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert sleep == OPT.prestop_sleep_s
    assert pod["terminationGracePeriodSeconds"] == sleep + math.ceil(api.graceful_timeout_s) + 2
    hpa = one(after, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == api.replicas
    assert hpa["spec"]["maxReplicas"] == 2 * api.replicas
    pdb = one(after, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_settings_are_what_a_replica_accepts(after):
    from stack.api.settings import ApiSettings

    secret = one(after, "Secret")
    settings = ApiSettings.model_validate(json.loads(secret["stringData"]["settings.json"]))
    assert settings.db_pool_max == AFTER.api.db_pool_max
    assert settings.db_statement_timeout_ms == AFTER.api.db_statement_timeout_ms
    assert settings.admin_token == "test-token"
    assert "password" not in settings.db_conninfo  # PGPASSWORD, from the operator's secret
    assert f"connect_timeout={AFTER.api.db_connect_timeout_s}" in settings.db_conninfo


def test_a_topology_change_reaches_the_manifests():
    topo = AFTER.with_changes(**{"api.graceful_timeout_s": 20, "api.memory_limit_mb": 900,
                                 "nginx.connect_timeout_s": 3, "api.replicas": 3})
    r = render(topo, OPT)
    pod = one(r, "Deployment", "fraud-api-blue")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == OPT.prestop_sleep_s + 20 + 2
    assert pod["containers"][0]["resources"]["limits"]["memory"] == "900Mi"
    ann = one(r, "Ingress", "fraud-api")["metadata"]["annotations"]
    assert ann["nginx.ingress.kubernetes.io/proxy-connect-timeout"] == "3"
    assert "nginx.connect_timeout_s" not in {n.field for n in r.notes}
    assert one(r, "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 3


def test_ingress_carries_the_tuned_preset(after):
    ngx = AFTER.nginx
    ann = one(after, "Ingress", "fraud-api")["metadata"]["annotations"]
    p = "nginx.ingress.kubernetes.io/"
    assert ann[p + "proxy-next-upstream"] == nginx_conf.TUNED_NEXT_UPSTREAM
    assert ann[p + "proxy-next-upstream-tries"] == str(ngx.next_upstream_tries)
    assert ann[p + "proxy-next-upstream-timeout"] == str(math.ceil(ngx.next_upstream_timeout_s))
    # ingress-nginx takes whole seconds: sub-second timeouts round up, and say so
    assert ann[p + "proxy-connect-timeout"] == str(math.ceil(ngx.connect_timeout_s))
    assert all(v.isdigit() for k, v in ann.items() if k.endswith("timeout"))
    assert "nginx.connect_timeout_s" in {n.field for n in after.notes}
    # ingress-nginx has no per-endpoint cap on requests in flight: said, not dropped silently
    assert any(n.field == "nginx.max_conns" and "not rendered" in n.message for n in after.notes)
    health = one(after, "Ingress", "fraud-api-health")
    assert health["metadata"]["annotations"][p + "rewrite-target"] == "/readyz"
    controller = one(after, "ConfigMap", "ingress-nginx-controller")["data"]
    assert controller["upstream-keepalive-connections"] == str(ngx.keepalive)
    assert int(controller["upstream-keepalive-timeout"]) < 75  # below the replicas' keep-alive


def test_postgres_is_the_labs_patroni_config(after):
    pg = one(after, "postgresql")["spec"]
    assert pg["numberOfInstances"] == 2
    assert pg["patroni"]["ttl"] == patroni_conf.TTL_S
    assert pg["patroni"]["loop_wait"] == patroni_conf.LOOP_WAIT_S
    assert pg["patroni"]["retry_timeout"] == patroni_conf.RETRY_TIMEOUT_S
    assert pg["patroni"]["synchronous_mode"] is True
    assert pg["patroni"]["synchronous_mode_strict"] is False
    assert pg["postgresql"]["parameters"]["max_connections"] == str(AFTER.postgres.max_connections)
    assert "unix_socket_directories" not in pg["postgresql"]["parameters"]


def test_redis_is_the_labs_cache_config(after):
    conf = one(after, "ConfigMap", "fraud-cache")["data"]["redis.conf"]
    assert "maxmemory 64mb" in conf and "maxmemory-policy allkeys-lru" in conf
    assert 'save ""' in conf and "bind 127.0.0.1" not in conf
    assert not any("#" in line for line in conf.splitlines()[1:])  # redis has no inline comments


def test_slo_rules_are_slo_py_at_real_windows():
    rendered = render(MONITORED, OPT)
    rule = one(rendered, "PrometheusRule")
    s = SloSettings(time_scale_s=3600, target=MONITORED.prometheus.slo_target,
                    latency_objective_s=MONITORED.prometheus.latency_objective_s)
    assert rule["spec"] == json.loads(json.dumps(rule_groups(s)))
    exprs = {r.get("record"): r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "[300s]" in exprs["slo:error_ratio:rate5m"]  # 5m is five real minutes
    assert "[259200s]" in exprs["slo:error_ratio:rate3d"]  # 3d is three real days


def test_blue_green_is_two_deployments_and_a_selector():
    blue = render(AFTER, OPT)
    green = render(AFTER, K8sOptions(slot="green", model_version="v2", token=lambda: "t"))
    assert "30-api-green.yaml" in green.files and "30-api-blue.yaml" not in green.files
    switch = green.files["35-api-switch.yaml"][0]
    assert switch["spec"]["selector"]["uptime-playbook/slot"] == "green"
    assert blue.files["35-api-switch.yaml"][0]["spec"]["selector"]["uptime-playbook/slot"] == "blue"
    settings = json.loads(one(green, "Secret")["stringData"]["settings.json"])
    assert settings["model_version"] == "v2"
    # both colours' own Services are scraped; the switch Service is not (no double count)
    monitor = one(green, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    preview = one(green, "Service", "fraud-api-green")["metadata"]["labels"]
    assert monitor.items() <= preview.items()
    assert not monitor.items() <= switch["metadata"]["labels"].items()


# -- bad input: refused with the field's name ----------------------------------------------
@pytest.mark.parametrize("topo, field", [
    (BEFORE, "nginx"),
    (AFTER.with_changes(**{"nginx.preset": "playbook"}), "nginx.preset"),
    (AFTER.with_changes(**{"api.replicas": 1}), "api.replicas"),
    (AFTER.with_changes(**{"postgres.standby": False}), "postgres.synchronous"),
])
def test_a_topology_it_cannot_express_is_refused(topo, field):
    with pytest.raises(ConfigError) as err:
        render(topo, OPT)
    assert err.value.field == field
    assert f"field '{field}'" in str(err.value)


def test_exact_refuses_approximations_and_passes_whole_values():
    with pytest.raises(ConfigError) as err:
        render(AFTER, K8sOptions(exact=True))
    assert err.value.field in {n.field for n in render(AFTER, OPT).notes}
    whole = AFTER.with_changes(**{
        "nginx.connect_timeout_s": 1, "nginx.send_timeout_s": 2, "nginx.read_timeout_s": 2,
        "redis.ping_timeout_s": 1, "postgres.batch_connection_limit": -1,
        "nginx.max_conns": 0})
    assert render(whole, K8sOptions(exact=True)).notes == []


@pytest.mark.parametrize("changes, flag", [
    ({"namespace": "Bad_NS"}, "--namespace"), ({"slot": "red"}, "--slot"),
    ({"cpu_request": "lots"}, "--cpu-request"), ({"max_replicas": 1}, "--max-replicas"),
    ({"model_version": "latest"}, "--model-version"),
])
def test_bad_options_are_refused_by_flag(changes, flag):
    with pytest.raises(ConfigError) as err:
        render(AFTER, K8sOptions(**changes))
    assert err.value.field == flag


# -- writing: all or nothing ---------------------------------------------------------------
def test_write_is_all_or_nothing(tmp_path, monkeypatch):
    out = tmp_path / "k8s"
    res = write_manifests(AFTER, out, OPT)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([MARKER, *(p.name for p in res.files)])
    docs = [d for p in res.files for d in yaml.safe_load_all(p.read_text()) if d]
    assert len(docs) == len(res.checks)
    assert oct(os.stat(out / "30-api-blue.yaml").st_mode & 0o777) == "0o600"
    before = {p.name: p.read_text() for p in res.files}

    # a refused topology leaves the earlier render as it was, and no temporary folder
    with pytest.raises(ConfigError):
        write_manifests(BEFORE, out, OPT)
    # so does an object that fails validation half-way through
    real = k8s_output.validate_all

    def failing(files, version):
        real(files, version)
        raise ConfigError("boom", field="spec")

    monkeypatch.setattr(k8s_output, "validate_all", failing)
    with pytest.raises(ConfigError, match="boom"):
        write_manifests(AFTER, out, K8sOptions(slot="green"))
    with pytest.raises(ConfigError):
        write_manifests(AFTER, tmp_path / "never", OPT)
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in res.files} == before
    assert not (tmp_path / "never").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k8s"]

    # an earlier render is replaced whole (the blue file goes when green is rendered)
    write_manifests(AFTER, out, K8sOptions(slot="green", token=lambda: "t"))
    assert (out / "30-api-green.yaml").exists() and not (out / "30-api-blue.yaml").exists()


def test_a_folder_it_did_not_write_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError) as err:
        write_manifests(AFTER, tmp_path, OPT)
    assert err.value.field == "-o"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}.new-*"))


def test_render_is_deterministic_given_the_token():
    a, b = render(AFTER, OPT), render(AFTER, OPT)
    assert k8s_output.dump("x", a.files["30-api-blue.yaml"], "after") == \
        k8s_output.dump("x", b.files["30-api-blue.yaml"], "after")


# -- the command ---------------------------------------------------------------------------
def test_cli_renders_and_reports(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="stackctl")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["render", "k8s", "--topology", "after", "-o", str(tmp_path / "o"),
                              "--host", "fraud.example.com"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "validated offline:" in out and "kubernetes-validate" in out
    assert "nginx.connect_timeout_s: 0.5 s rendered as 1 s" in out
    ingress = yaml.safe_load_all((tmp_path / "o" / "40-ingress.yaml").read_text())
    assert next(d for d in ingress if d)["spec"]["rules"][0]["host"] == "fraud.example.com"


def test_cli_bad_topology_names_the_field(tmp_path):
    parser = argparse.ArgumentParser(prog="stackctl")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["render", "k8s", "--topology", "before", "-o", str(tmp_path / "o")])
    with pytest.raises(ConfigError, match="field 'nginx'"):
        args.func(args)
    assert not (tmp_path / "o").exists()


def test_no_heavy_import_at_import_time():
    import subprocess
    import sys

    code = ("import sys, stack.k8s.cli; "
            "print(any(m.startswith('kubernetes_validate') for m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert res.stdout.strip() == "False", res.stderr
