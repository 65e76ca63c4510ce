"""Week 4's verdict lines, on synthetic records with known answers."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from stack.analysis.records import records_frame
from stack.course.week4 import ActionRun, hard_numbers, incident_facts, write_summary
from stack.lab.runner import ScenarioResult
from stack.scenario import parse_scenario


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


WEEK = """name: two_faults
duration_s: 40
represents: 7d
on_call_response_s: 5
events:
  - {at: 10, fault: crash, target: api1, real_duration: 25m}
  - {at: 25, fault: slow_db, target: api2, duration: 5, real_duration: 2h}
"""


def _result(tmp_path, name: str, failing: tuple[float, float] | None, stray: bool = False
            ) -> ScenarioResult:
    """A saved scenario result: 10 requests/s for 40 s, failing within `failing` (502s from
    nginx), and one stray timeout outside every fault when `stray`."""
    rows = []
    for i in range(400):
        t = i / 10
        bad = failing is not None and failing[0] <= t < failing[1]
        bad_stray = stray and i == 370
        rows.append({"kind": "load", "t": t, "wall": 1.7e9 + t, "latency_s": 0.01,
                     "lag_s": 0.0, "status": 502 if bad else (0 if bad_stray else 200),
                     "error": "http_5xx" if bad else ("timeout" if bad_stray else ""),
                     "backend": "" if bad or bad_stray else "api2", "request_id": ""})
    rows += [{"kind": "probe", "t": float(i), "wall": 1.7e9 + i, "latency_s": 0.01,
              "lag_s": 0.0, "status": 200, "error": "", "backend": "api2", "request_id": ""}
             for i in range(40)]
    folder = tmp_path / name
    folder.mkdir()
    records_frame(rows).to_json(folder / "records.jsonl", orient="records", lines=True)
    scenario = parse_scenario(WEEK)
    faults = [{"fault": "crash", "target": "api1", "event": 0, "start": 10.0, "end": 15.0,
               "error": ""},
              {"fault": "slow_db", "target": "api2", "event": 1, "start": 25.0, "end": 30.0,
               "error": ""}]
    (folder / "result.json").write_text(json.dumps({
        "scenario": scenario.model_dump(), "topology": name, "faults": faults,
        "front": "nginx"}))
    return ScenarioResult.load(folder)


def test_a_saved_result_gives_the_week_and_explains_its_failures(tmp_path):
    res = _result(tmp_path, "after", (10.0, 11.0), stray=True)
    week = res.week()
    assert week.incidents["real_s"].tolist() == [1500.0, 7200.0]
    assert week.incidents.loc[0, "failed"] == 10  # of the 50 in [10, 15)
    assert bool(week.incidents.loc[0, "self_healed"])  # 1 s of failures in a 5 s window
    assert week.availability == pytest.approx(
        1 - (10 / 50 * 5 + 1 / 300 * (7 * 86400 - 8700)) / (7 * 86400))
    assert week.replay_availability == pytest.approx(389 / 400)
    explained = res.explain_failures()
    assert explained.to_dict("records") == [
        {"answered_by": "nginx", "fault": "crash api1", "error": "http_502", "failed": 10,
         "first_t": 10.0, "last_t": 10.9},
        {"answered_by": "no answer", "fault": "outside every fault window",
         "error": "timeout", "failed": 1, "first_t": 37.0, "last_t": 37.0}]


def test_hard_numbers_lead_with_the_week_and_keep_the_replay(tmp_path):
    before = _result(tmp_path, "before", (10.0, 15.0))
    after = _result(tmp_path, "after", None)
    table = hard_numbers(before, after, {})
    assert list(table.index[:5]) == ["availability over the week", "downtime per week",
                                     "downtime per 30 days",
                                     "availability in the replay (requests)",
                                     "availability in the replay (uptime probe)"]
    assert table.loc["availability over the week", "after"] == "100.000%"
    assert table.loc["downtime per week", "before"] == "25.0 min"  # every request of the crash
    assert table.loc["availability in the replay (requests)", "before"] == "87.500%"
    assert table.loc["failed requests outside every fault window", "after"] == "0"
    path = write_summary(tmp_path / "summary.md", table, "fig.png", ["a note"],
                         incidents={"before": before.week().table()})
    text = path.read_text()
    assert "10.1 min of downtime per week, 43.2 min per 30 days" in text
    assert "| availability over the week | 99.752% | 100.000% |" in text
    assert "## Incidents, before" in text and "no Prometheus in this run" in text


def test_a_monitored_result_reads_its_pages_from_the_webhook(tmp_path):
    res = _result(tmp_path, "monitored", (10.0, 11.0))
    assert res.page_times() is None and not res.week().pages_known  # no Prometheus ran
    meta = json.loads((res.records_path.parent / "result.json").read_text())
    (res.records_path.parent / "result.json").write_text(json.dumps({**meta, "monitored": True}))
    res = ScenarioResult.load(res.records_path.parent)
    assert res.page_times() == []
    hook = res.records_path.parent / "webhook"
    hook.mkdir()
    notes = [{"received": 1.7e9 + 13.5, "status": "firing", "alertname": "FastBurn",
              "severity": "page"},
             {"received": 1.7e9 + 12.0, "status": "firing", "alertname": "Slow",
              "severity": "ticket"},
             {"received": 1.7e9 + 45.0, "status": "resolved", "alertname": "FastBurn",
              "severity": "page"}]
    (hook / "notifications.jsonl").write_text("".join(json.dumps(n) + "\n" for n in notes))
    assert res.page_times() == pytest.approx([13.5])
    week = res.week()
    assert week.incidents.loc[0, "detect_page_s"] == pytest.approx(3.5)
    assert week.table().loc["slow_db api2", "paged"] == "not paged"
    copy = ScenarioResult.load(res.save(tmp_path / "saved"))
    assert copy.monitored and copy.page_times() == pytest.approx([13.5])
