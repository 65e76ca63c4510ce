"""Integration: deploys, rollbacks and rolling restarts on a real AFTER lab (nginx, two replicas)
under steady open-loop traffic, with no failed request."""
from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stack.deploy import rollout as deploy_mod
from stack.analysis.records import load_records
from stack.deploy.rollout import deploy, rolling_restart, rollback
from stack.lab.lab import Lab
from stack.model.registry import deployed_record, deployed_version
from stack.model.train import train
from stack.deploy.gate import make_bad_model
from stack.lab.traffic import Traffic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = 60.0
MIN_REQUESTS = 600


@pytest.fixture(scope="module")
def lab(runs_root: Path, model_dir: Path):
    with Lab("after", runs_root / "deploy", model_dir=model_dir) as lab:
        models = Path(lab.apis[0].settings["model_dir"])
        train(models, "v2", seed=8)
        make_bad_model(models, "shuffled_labels", version="v3")  # the newest number, and bad
        yield lab


@pytest.fixture
def serving_v1(lab: Lab):
    """Every test starts with v1 serving everywhere and recorded as deployed."""
    report = deploy(lab, "v1")
    assert report.ok, report.summary()
    return lab


def _under_traffic(lab: Lab, name: str, action):
    """Steady traffic through nginx; `action` runs in the middle; at least MIN_REQUESTS sent.
    Returns (action's result, traffic result, ok request ids, seconds the action took)."""
    traffic = Traffic(lab.public_url, lab.run_dir, rate=RATE, duration=120, name=name,
                      progress=False, timeout=5.0, idempotency_keys=True)
    traffic.start()
    try:
        time.sleep(3.0)
        t0 = time.monotonic()
        outcome = action()
        took = time.monotonic() - t0
        while traffic.elapsed * RATE < MIN_REQUESTS + 2 * RATE:
            time.sleep(0.1)
    finally:
        result = traffic.stop()
    # a client that fell behind its schedule proves nothing about the server either way
    assert not result.client_behind, f"{name}: INCONCLUSIVE, {result.client_note()}"
    records = load_records(result.path)
    load = records[records["kind"] == "load"]
    ok_ids = list(load.loc[load["status"] == 200, "request_id"])
    print(f"{name}: {result.load_sent} requests, {result.load_failed} failed, "
          f"action took {took:.2f} s")
    return outcome, result, ok_ids, took


def _versions_of(lab: Lab, request_ids: list[str]) -> dict[str, int]:
    """model_version of each answered request, from the predictions table."""
    with lab.db.connect() as conn:
        rows = conn.execute("SELECT model_version, count(*) FROM predictions "
                            "WHERE request_id = ANY(%s::uuid[]) GROUP BY 1",
                            (request_ids,)).fetchall()
    return dict(rows)


def _model_info(api) -> set[str]:
    text = httpx.get(api.url + "/metrics", timeout=5).text
    return {s.labels["version"] for f in text_string_to_metric_families(text)
            if f.name == "model_info" for s in f.samples if s.value == 1}


def _serving(lab: Lab) -> dict[str, str]:
    return {api.name: api.admin("GET", "/admin/model").json()["active_version"]
            for api in lab.apis}


def test_good_model_deploys_with_no_failed_request(serving_v1: Lab):
    lab = serving_v1
    report, result, ok_ids, took = _under_traffic(lab, "deploy-v2",
                                                  lambda: deploy(lab, "v2"))
    print(report.summary())
    assert report.ok, report.summary()
    assert result.load_sent >= MIN_REQUESTS and result.load_failed == 0
    assert [s.step for s in report.steps] == ["inspect", "smoke", "stage", "stage", "activate",
                                              "activate", "verify", "verify"]
    assert _serving(lab) == {"api1": "v2", "api2": "v2"}
    assert all(_model_info(api) == {"v2"} for api in lab.apis), "the switch shows in /metrics"
    versions = _versions_of(lab, ok_ids)
    assert sum(versions.values()) == len(ok_ids), "every answered request is recorded"
    assert set(versions) == {"v1", "v2"} and versions["v2"] > 100
    assert deployed_record(Path(lab.apis[0].settings["model_dir"]))["previous"] == "v1"


def test_bad_model_is_rejected_before_any_replica_sees_it(serving_v1: Lab):
    lab = serving_v1
    report, result, ok_ids, _ = _under_traffic(lab, "deploy-bad", lambda: deploy(lab, "v3"))
    print(report.summary())
    assert not report.ok
    assert "v3 rejected by smoke tests: quality: roc_auc" in report.message
    assert "below the active model's" in report.message and "not staged" in report.message
    assert [s.step for s in report.steps] == ["inspect", "smoke"], "never staged"
    assert result.load_sent >= MIN_REQUESTS and result.load_failed == 0
    assert _serving(lab) == {"api1": "v1", "api2": "v1"}
    for api in lab.apis:  # not even loaded into an idle slot
        slots = api.admin("GET", "/admin/model").json()["slots"]
        assert "v3" not in {s["version"] for s in slots.values()}
    assert "v3" not in _versions_of(lab, ok_ids)
    with lab.db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM predictions WHERE model_version = 'v3'"
                            ).fetchone()[0] == 0


def test_rolling_restart_with_no_failed_request(serving_v1: Lab):
    lab = serving_v1
    deploy(lab, "v2")
    pids = {api.name: api.proc.pid for api in lab.apis}
    report, result, ok_ids, took = _under_traffic(lab, "rolling-restart",
                                                  lambda: rolling_restart(lab))
    print(report.summary())
    assert report.ok, report.summary()
    assert [(s.step, s.target) for s in report.steps] == [
        ("drain", "api1"), ("wait_idle", "api1"), ("restart", "api1"), ("verify", "api1"),
        ("drain", "api2"), ("wait_idle", "api2"), ("restart", "api2"), ("verify", "api2"),
        ("undrain", "api2")]
    assert result.load_sent >= MIN_REQUESTS
    # nginx 1.22 closes idle keep-alive client connections when a reload retires its old
    # workers; a request sent on one at that instant is reset before nginx reads it
    # (nginx/nginx#456; fixed by keepalive_min_timeout in 1.27.4). The client retries such a
    # request on another connection (a few tries), which its Idempotency-Key makes safe:
    # nothing may fail.
    assert result.load_failed == 0, load_records(result.path).query("error != ''").to_string()
    for api in lab.apis:
        assert api.proc.pid != pids[api.name]
        assert report.pids[api.name] == (pids[api.name], api.proc.pid)
    # restarted replicas load the deployed version, not the newest file (v3, which is bad)
    assert _serving(lab) == {"api1": "v2", "api2": "v2"}
    assert "v3" not in _versions_of(lab, ok_ids)
    assert lab.component("nginx").down == frozenset(), "every replica is back in nginx"


def test_rollback_on_an_attached_lab(serving_v1: Lab):
    lab = serving_v1
    attached = Lab.attach(lab.run_dir)  # what `stackctl deploy` / `stackctl rollback` use
    assert deploy(attached, "v2").ok
    report, result, ok_ids, took = _under_traffic(lab, "rollback", lambda: rollback(attached))
    print(report.summary())
    assert report.ok and report.version == "v1", report.summary()
    # v1 is still loaded in each replica's previous slot: no staging, one flip per replica
    assert [(s.step, s.target) for s in report.steps] == [
        ("inspect", "all"), ("flip", "api1"), ("flip", "api2"), ("verify", "api1"),
        ("verify", "api2")]
    assert result.load_sent >= MIN_REQUESTS and result.load_failed == 0
    assert _serving(lab) == {"api1": "v1", "api2": "v1"}
    assert all(_model_info(api) == {"v1"} for api in lab.apis)
    assert deployed_version(Path(lab.apis[0].settings["model_dir"])) == "v1"


def test_failed_stage_on_one_replica_activates_nothing(serving_v1: Lab, monkeypatch):
    lab = serving_v1
    real = deploy_mod._admin

    def failing(api, method, path, **kw):
        if api.name == "api2" and path == "/admin/model/stage":
            return False, "409 model_rejected: injected by the test"
        return real(api, method, path, **kw)

    monkeypatch.setattr(deploy_mod, "_admin", failing)
    report = deploy(lab, "v2")
    assert not report.ok
    assert "staging v2 failed on api2" in report.message and "nothing was activated" in \
        report.message
    assert "activate" not in [s.step for s in report.steps]
    assert _serving(lab) == {"api1": "v1", "api2": "v1"}


def test_failed_activation_rolls_the_others_back(serving_v1: Lab, monkeypatch):
    lab = serving_v1
    real = deploy_mod._admin

    def failing(api, method, path, **kw):
        if api.name == "api2" and path == "/admin/model/activate":
            return False, "api2's admin port did not answer: injected by the test"
        return real(api, method, path, **kw)

    monkeypatch.setattr(deploy_mod, "_admin", failing)
    report = deploy(lab, "v2")
    assert not report.ok
    assert "activating v2 failed on api2" in report.message
    assert "rolled back api1" in report.message
    assert [(s.step, s.target, s.ok) for s in report.steps[-2:]] == [
        ("activate", "api2", False), ("rollback", "api1", True)]
    assert _serving(lab) == {"api1": "v1", "api2": "v1"}
    assert deployed_version(Path(lab.apis[0].settings["model_dir"])) == "v1"


def test_rollback_after_a_restart_stages_everywhere_then_flips(serving_v1: Lab):
    lab = serving_v1
    assert deploy(lab, "v2").ok
    lab.restart("api2")  # api2 lost its slots: it must load v1 again before any flip
    report = rollback(lab)
    assert report.ok, report.summary()
    assert [(s.step, s.target) for s in report.steps] == [
        ("inspect", "all"), ("stage", "api2"), ("flip", "api1"), ("flip", "api2"),
        ("verify", "api1"), ("verify", "api2")]
    assert _serving(lab) == {"api1": "v1", "api2": "v1"}


def test_failed_rollback_flip_flips_the_others_back(serving_v1: Lab, monkeypatch):
    lab = serving_v1
    assert deploy(lab, "v2").ok
    real = deploy_mod._admin

    def failing(api, method, path, **kw):
        if api.name == "api2" and path == "/admin/model/rollback":
            return False, "api2's admin port did not answer: injected by the test"
        return real(api, method, path, **kw)

    monkeypatch.setattr(deploy_mod, "_admin", failing)
    report = rollback(lab)
    assert not report.ok
    assert "flipping api2 to v1 failed" in report.message and "flipped back api1" in \
        report.message
    assert [(s.step, s.target, s.ok) for s in report.steps[-3:]] == [
        ("flip", "api1", True), ("flip", "api2", False), ("undo", "api1", True)]
    assert _serving(lab) == {"api1": "v2", "api2": "v2"}, "all or none"
    assert deployed_version(Path(lab.apis[0].settings["model_dir"])) == "v2"


def test_a_second_deploy_at_once_is_refused(serving_v1: Lab):
    lab = serving_v1
    with deploy_mod._exclusive(lab, "deploy v9"):
        with pytest.raises(deploy_mod.DeployError, match="another deploy.*deploy v9 by pid"):
            deploy(lab, "v2")


def test_rolling_restart_needs_nginx_and_two_replicas(tmp_path):
    before = Lab("before", tmp_path / "never-started", teardown_at_exit=False)
    before.components = before._plan()  # one replica, no nginx; nothing is started
    report = rolling_restart(before)
    assert not report.ok and report.steps == []
    assert "needs nginx and two or more replicas" in report.message
    assert "no nginx and 1 replica(s)" in report.message
