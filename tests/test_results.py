"""Week 4's verdict lines, on synthetic records with known answers."""
from __future__ import annotations

import pandas as pd
import pytest

from stack.course.week4 import ActionRun, incident_facts


def _run(statuses: list[tuple[int, str]], lag_s: float = 0.001) -> ActionRun:
    records = pd.DataFrame([{"kind": "load", "status": s, "error": e, "lag_s": lag_s}
                            for s, e in statuses]
                           + [{"kind": "probe", "status": 0, "error": "connect", "lag_s": 0.0}])
    return ActionRun("rolling restart", None, records, 3.0, 9.0)


def test_line_counts_load_requests_only():
    assert _run([(200, "")] * 5).line() == "rolling restart: PASS (0 failed of 5 requests)"


def test_a_failed_line_says_what_the_users_saw():
    run = _run([(200, "")] * 7 + [(502, "http_5xx"), (0, "read"), (0, "read")])
    assert run.failed == 3
    assert run.line() == ("rolling restart: FAIL (3 failed of 10 requests: read: 2, "
                          "http_5xx: 1)")


def test_a_late_client_makes_the_line_inconclusive():
    run = _run([(200, "")] * 5 + [(0, "timeout")], lag_s=0.3)
    assert run.line() == ("rolling restart: INCONCLUSIVE (the load client fell behind: 6 of 6 "
                          "requests left 0.1 s late or not at all, so the failures may be the "
                          "client's)")


def test_incident_facts_from_the_failed_requests():
    records = pd.DataFrame([{"kind": "load", "t": float(t), "status": 503 if 3 <= t <= 6 else 200,
                             "error": "http_5xx" if 3 <= t <= 6 else ""} for t in range(10)])
    facts = incident_facts(ActionRun("hand-made deploy", None, records, 2.0, 8.0), rate=40.0)
    assert facts["requests"] == 10 and facts["failed"] == 4
    assert (facts["first_failure_t"], facts["last_failure_t"], facts["duration_s"]) == (3, 6, 3)
    assert facts["errors"] == {"http_5xx": 4}
    assert facts["budget_minutes"] == pytest.approx(4 / 40 / 60)
