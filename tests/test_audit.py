"""Integration: each claim of the nginx audit, measured on a real AFTER lab per nginx preset.

One lab per preset (module scope: pytest runs every playbook test, then every tuned one); each
test restores the lab afterwards, so the next one starts with both replicas ready and nginx's
failure counts cleared.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from stack.course import audit
from stack.errors import StackError

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module", params=audit.PRESETS)
def lab(request: pytest.FixtureRequest, runs_root: Path, model_dir: Path):
    preset = request.param
    with audit.audit_lab(preset, runs_root / f"audit-{preset}", model_dir=model_dir) as lab:
        yield lab


@pytest.fixture
def audited(lab):
    """The lab, left healthy after the test: replicas running and ready, both reached
    through nginx, nginx's failure counts reset."""
    yield lab
    audit.restore(lab)
    assert all(api.ready() for api in lab.apis), "every test leaves the lab healthy"


def _preset(lab) -> str:
    return audit.preset_of(lab)


def test_upstream_keepalive(audited):
    r = audit.upstream_keepalive(audited, n=200)
    f = r.figures
    assert f["failed"] == 0
    if _preset(audited) == "playbook":
        # a connection per request, closed by the replica after its answer
        assert f["connections"] >= 160 and f["time_wait"] >= 160, f
        assert not r.ok and "a new upstream connection per request" in r.verdict
    else:
        assert f["connections"] <= 8, f
        assert r.ok


def test_health_when_all_replicas_down(audited):
    r = audit.health_when_all_down(audited)
    if _preset(audited) == "playbook":
        assert (r.figures["status"], r.figures["body"]) == (200, "healthy")
        assert r.verdict == ("finding: playbook: /health with every replica down: "
                             "/health answers 200 while every replica is down")
    else:
        assert r.figures["status"] == 503 and r.ok


@pytest.mark.parametrize("keys", [True, False], ids=["keys", "no-keys"])
def test_hung_replica(audited, keys: bool):
    r = audit.hung_replica(audited, idempotency_keys=keys)
    f = r.figures
    if _preset(audited) == "playbook":
        # no retry of a POST, keys or not, and a 10 s read timeout: the 5 s client gives up
        assert f["failed"] > 0 and set(f["failed_how"]) == {"timeout"}, f
        assert f["failed_latency_median_ms"] >= 4900
    elif keys:
        # retried on the other replica after the 1.5 s read timeout
        assert f["failed"] == 0, f
        assert 1400 <= f["p99_during_ms"] <= 2500, f
    else:
        # not retried: 504 after the 1.5 s read timeout
        assert f["failed"] > 0 and set(f["failed_how"]) == {"504"}, f
        assert 1400 <= f["failed_latency_median_ms"] <= 2000, f
    assert r.ok == (f["failed"] == 0)


def test_killed_replica(audited):
    r = audit.killed_replica(audited)
    f = r.figures
    # refused connections are retried; only requests in flight at the kill may fail
    assert f["failed_after_kill"] == 0, f
    assert f["failed"] == f["failed_in_flight_at_kill"] <= 3, f
    assert r.ok


def test_per_worker_failure_counts(audited):
    r = audit.per_worker_failure_counts(audited)
    f = r.figures
    assert f["failed"] == 0, f  # every refused connection was retried on api2
    if _preset(audited) == "playbook":
        # no zone: each worker spends its own max_fails=3 on the dead replica (plus at most
        # one request that picked it while a refused connect was still being reported)
        assert f["workers_attempting"] == 2, f
        assert f["attempts_total"] > f["attempts_budget"], f
        assert max(f["attempts_per_worker"]) <= f["max_fails"] + 1, f
        assert not r.ok
    else:
        # zone: the first refused connect takes api1 out for every worker
        assert f["attempts_total"] <= f["attempts_budget"], f
        assert r.ok


def test_unknown_preset_is_refused_before_any_lab_starts():
    with pytest.raises(StackError, match="use one of playbook, tuned"):
        with audit.audit_lab("yolo"):
            pass


def test_table_has_one_row_per_claim_and_a_column_per_preset():
    killed = {"failed": 1, "requests": 240, "failed_in_flight_at_kill": 1}
    health = {"status": 200, "body": "healthy"}
    results = [
        audit.AuditResult("killed replica", "playbook", True, "playbook: killed replica: PASS",
                          killed),
        audit.AuditResult("/health with every replica down", "playbook", False,
                          "finding: playbook: /health with every replica down: ...", health),
        audit.AuditResult("killed replica", "tuned", False, "tuned: killed replica: FAIL",
                          killed)]
    df = audit.table(results)
    assert list(df.columns) == ["playbook", "tuned"] and df.index.name == "claim"
    assert df.loc["killed replica", "playbook"] == "ok: 1 of 240 failed, 1 in flight"
    assert df.loc["killed replica", "tuned"] == "FAIL: 1 of 240 failed, 1 in flight"
    assert df.loc["/health with every replica down", "playbook"] == "finding: HTTP 200 'healthy'"
    assert df.loc["/health with every replica down", "tuned"] == "not run"
    assert all(len(v) <= 50 for v in df.to_numpy().ravel()), "pandas cuts cells at 50"


def test_expected_flaws_read_as_findings_and_tuned_regressions_as_fail():
    class FakeLab:
        def __init__(self, preset):
            self.topology = type("T", (), {"nginx": type("N", (), {"preset": preset})})

    flaw = audit._result(FakeLab("playbook"), "upstream keep-alive", False, "why")
    assert flaw.verdict == "finding: playbook: upstream keep-alive: why"
    limit = audit._result(FakeLab("tuned"), "hung replica, without Idempotency-Key", False, "why")
    assert limit.verdict.startswith("finding: tuned: ")
    regression = audit._result(FakeLab("tuned"), "upstream keep-alive", False, "why")
    assert regression.verdict == "tuned: upstream keep-alive: FAIL (why)"
    assert audit._result(FakeLab("playbook"), "killed replica", True, "ok").verdict == \
        "playbook: killed replica: PASS (ok)"


def test_tuned_diff_shows_what_the_tuned_preset_changes_and_why():
    text = audit.tuned_diff()
    assert "--- nginx.conf (playbook)" in text and "+++ nginx.conf (tuned)" in text
    assert "-            proxy_next_upstream error timeout http_500 http_502 http_503;" in text
    assert "+        proxy_http_version 1.1;" in text
    assert "Why http_500 left the general proxy_next_upstream" in text


def test_claims_per_preset():
    results = []
    df = audit.table(results)
    assert df.empty
    assert [fn.__name__ for fn, _ in audit.claims("playbook")] == [
        "upstream_keepalive", "hung_replica", "killed_replica", "health_when_all_down",
        "per_worker_failure_counts"]
