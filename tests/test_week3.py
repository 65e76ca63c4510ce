"""Week 3's incident run: the verdicts' facts on synthetic states and records."""
from __future__ import annotations

import pandas as pd

from stack.analysis.health import ACTIONS
from stack.course.week3 import IncidentRun


class _Result:
    def __init__(self, records: pd.DataFrame):
        self.records = records


def _run(state_ts: list[tuple[float, str]], fail_t: float | None) -> IncidentRun:
    states = pd.DataFrame([{"t": t, "color": c, "reasons": "" if c == "green" else f"why {c}",
                            "action": ACTIONS[c]} for t, c in state_ts])
    rows = [{"kind": "load", "t": float(t), "status": 200} for t in range(30)]
    if fail_t is not None:
        rows.append({"kind": "load", "t": fail_t, "status": 500})
    return IncidentRun(_Result(pd.DataFrame(rows)), 0.0, 30.0, states,
                       pd.DataFrame())


def test_warned_before_errors_checks_the_order():
    assert _run([(0.0, "green"), (8.0, "yellow"), (17.0, "red")], 14.0).warned_before_errors()
    assert not _run([(0.0, "green"), (15.0, "yellow")], 14.0).warned_before_errors()
    assert not _run([(0.0, "green")], 14.0).warned_before_errors()
    assert _run([(0.0, "green"), (8.0, "red")], None).warned_before_errors()


def test_state_report_prints_every_reason_and_action_in_full():
    text = _run([(-0.4, "green"), (8.1, "yellow")], 14.0).state_report()
    assert "t-0.4s" in text and "t+8.1s" in text and "why yellow" in text
    assert all(action in text for action in ACTIONS.values())


def test_first_page_resolved_looks_at_the_alert_that_paged_first():
    run = _run([(0.0, "green")], 14.0)
    notes = [(20.0, "firing", "Fast"), (35.0, "firing", "Slow"), (41.0, "resolved", "Fast")]
    run.notifications = pd.DataFrame([{"received": t, "status": s, "alertname": a,
                                       "severity": "page"} for t, s, a in notes])
    assert run.first_page_resolved()
    run.notifications = run.notifications.iloc[:2]
    assert not run.first_page_resolved()


def test_first_fault_alone_reads_the_states_and_probes_until_the_next_fault():
    states = pd.DataFrame([{"t": t, "color": c, "reasons": "", "action": ""}
                           for t, c in [(-0.1, "green"), (8.1, "yellow"), (13.0, "red")]])
    probes = [{"kind": "probe", "t": t / 2, "status": 200, "error": ""} for t in range(60)]
    probes.append({"kind": "probe", "t": 14.0, "status": 0, "error": "timeout"})  # after
    result = _Result(pd.DataFrame(probes))
    result.faults = [{"fault": "error_rate", "start": 12.0, "end": 36.0},
                     {"fault": "hang", "start": 6.0, "end": 36.0}]
    run = IncidentRun(result, 0.0, 30.0, states, pd.DataFrame())
    assert run.first_fault_alone() == ({"green", "yellow"}, 0)
    result.records.loc[len(result.records)] = {"kind": "probe", "t": 9.0, "status": 0,
                                               "error": "timeout"}
    states.loc[len(states)] = {"t": 10.0, "color": "red", "reasons": "", "action": ""}
    run = IncidentRun(result, 0.0, 30.0, states.sort_values("t"), pd.DataFrame())
    assert run.first_fault_alone() == ({"green", "yellow", "red"}, 1)


def test_the_health_watcher_keeps_every_sample_in_the_run_directory(tmp_path):
    import json
    import time

    from stack.analysis.slo import SloSettings
    from stack.course.week3 import HealthWatcher

    class DownPrometheus:  # every query fails, as a Prometheus that is restarting does
        def query(self, expr):
            raise ConnectionError("prometheus is not answering")

    path = tmp_path / "health-states.jsonl"
    with HealthWatcher(DownPrometheus(), SloSettings(), interval=0.01, path=path) as watcher:
        time.sleep(0.1)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len(watcher.rows) >= 2
    assert lines[0]["color"] == "unknown" and "not answering" in lines[0]["reasons"]
