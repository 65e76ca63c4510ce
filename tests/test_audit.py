"""The nginx audit's verdicts, table and diff. Its claims are measured on real AFTER labs, one per
preset, by week 2's audit cell: nbval compares every claim's verdict line for both presets in
this same run (a playbook flaw reads `finding: ...`; a tuned claim that fails reads FAIL), so
the measurement runs once per `make test`.
"""
from __future__ import annotations


import pytest

from stack.course import audit
from stack.errors import StackError


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
