"""Week 4's verdict lines, on synthetic records with known answers."""
from __future__ import annotations

import pandas as pd

from stack.results import ActionRun


def _run(statuses: list[tuple[int, str]]) -> ActionRun:
    records = pd.DataFrame([{"kind": "load", "status": s, "error": e} for s, e in statuses]
                           + [{"kind": "probe", "status": 0, "error": "connect"}])
    return ActionRun("rolling restart", None, records, 3.0, 9.0)


def test_line_counts_load_requests_only():
    assert _run([(200, "")] * 5).line() == "rolling restart: PASS (0 failed of 5 requests)"


def test_a_failed_line_says_what_the_users_saw():
    run = _run([(200, "")] * 7 + [(502, "http_5xx"), (0, "read"), (0, "read")])
    assert run.failed == 3
    assert run.line() == ("rolling restart: FAIL (3 failed of 10 requests: read: 2, "
                          "http_5xx: 1)")
