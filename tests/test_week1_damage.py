"""Week 1's damage table and its Sentry verdict: the events while a fault is in place, apart
from those a frozen process sends the instant it is resumed."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from stack.course.week1 import fault_damage

T0 = 1_800_000_000.0  # the run's t = 0, as Unix time


def _result(faults: list[dict]) -> SimpleNamespace:
    t = [i * 0.1 for i in range(300)]
    records = pd.DataFrame({"kind": "load", "t": t, "wall": [T0 + x for x in t],
                            "status": [503 if 3 <= x < 9 else 200 for x in t], "error": ""})
    return SimpleNamespace(records=records, faults=faults,
                           scenario=SimpleNamespace(traffic=SimpleNamespace(probe_interval_s=0.5)))


def _events(run_dir: Path, *ts: float) -> None:
    (run_dir / "sentry").mkdir(parents=True)
    lines = [json.dumps({"timestamp": datetime.fromtimestamp(T0 + t, timezone.utc)
                         .isoformat(), "tags": {"cause": "database", "replica": "api1"},
                         "exception": [{"type": "PoolTimeout", "value": "no connection"}]})
             for t in ts]
    (run_dir / "sentry" / "api1.jsonl").write_text("\n".join(lines) + "\n")


def test_an_event_at_the_resume_is_not_one_while_down(tmp_path: Path):
    """A hang from 3 s to 9 s: the resumed process's PoolTimeout 4 ms before the recorded end
    (the run's clocks) counts in the window, not while down; one at 5 s counts in both."""
    hang = {"fault": "hang", "target": "api1", "start": 3.0, "end": 9.0, "error": ""}
    _events(tmp_path, 9.0 - 0.004)
    row = fault_damage(_result([hang]), tmp_path).iloc[0]
    assert row["failed_requests"] > 0
    assert (row["sentry_events"], row["sentry_while_down"]) == (1, 0)
    other = tmp_path / "other"
    _events(other, 5.0, 9.0 + 1.0)
    row = fault_damage(_result([hang]), other).iloc[0]
    assert (row["sentry_events"], row["sentry_while_down"]) == (2, 1)
