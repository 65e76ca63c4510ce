"""Incident timelines from synthetic metrics, notifications and probe records."""
from __future__ import annotations

import pandas as pd

from stack.analysis.records import records_frame
from stack.analysis.incident import Thresholds, incident_events, incident_timeline, query_signals

T0 = 1_700_000_000.0


def _metrics() -> pd.DataFrame:
    rows = []
    for s in range(0, 60):
        wall = T0 + s
        rows.append(("p99_s", "", wall, 0.9 if 12 <= s < 30 else 0.1))
        rows.append(("db_in_use", "", wall, 8 if 13 <= s < 28 else 3))
        rows.append(("db_waiting", "", wall, 0))
        rows.append(("probe_success", "", wall, 0 if 14 <= s < 26 else 1))
        rows.append(("api_up", "api1", wall, 1))
        rows.append(("api_up", "api2", wall, 0 if 20 <= s < 35 else 1))
    return pd.DataFrame(rows, columns=["signal", "series", "wall", "value"])


def _notes() -> pd.DataFrame:
    base = {"alertname": "SLOErrorBudgetBurnFast", "severity": "page",
            "startsAt": "2023-11-14T22:13:39Z", "labels": {}, "fingerprint": "f"}
    return pd.DataFrame([
        {**base, "received": T0 + 19.2, "status": "firing", "endsAt": ""},
        {**base, "received": T0 + 20.2, "status": "firing", "endsAt": ""},  # a repeat
        {**base, "received": T0 + 40.4, "status": "resolved", "endsAt": "x"},
    ])


def _records() -> pd.DataFrame:
    rows = []
    for s in range(0, 60, 2):
        bad = 14 <= s < 26
        rows.append({"kind": "probe", "t": float(s), "wall": T0 + s + 0.3, "latency_s": 0.01,
                     "status": 503 if bad else 200, "error": "http_5xx" if bad else ""})
    rows.append({"kind": "load", "t": 15.0, "wall": T0 + 15, "latency_s": 0.01, "status": 500,
                 "error": "http_5xx"})
    return records_frame(rows)


def test_timeline_in_order_with_relative_times():
    lines = incident_timeline(_metrics(), _notes(), _records(), T0)
    assert lines == [
        "at t+12s p99 latency rose above 500 ms",
        "at t+13s DB connections hit the pool limit (8)",
        "at t+14s the uptime probe failed",
        "at t+14s the uptime check failed (HTTP 503)",
        "at t+19s the page fired (SLOErrorBudgetBurnFast)",
        "at t+20s api2 stopped answering scrapes (up=0)",
        "at t+26s the uptime probe succeeded again",
        "at t+26s the uptime check passed again",
        "at t+28s DB connections fell below the pool limit",
        "at t+30s p99 latency fell back under 500 ms",
        "at t+35s api2 answered scrapes again",
        "at t+40s the page resolved (SLOErrorBudgetBurnFast)",
    ]


def test_events_frame_and_thresholds():
    ev = incident_events(_metrics(), _notes(), _records(), T0 + 10,
                         Thresholds(latency_s=1.0, pool_max=10))
    assert list(ev.columns) == ["t", "wall", "source", "text"]
    assert ev["wall"].is_monotonic_increasing
    assert not ev["text"].str.contains("p99|pool limit").any()
    assert ev["t"].iloc[0] == 4  # probe failed at T0 + 14, start at T0 + 10


def test_empty_inputs_give_no_events():
    ev = incident_events(pd.DataFrame(columns=["signal", "wall", "value"]),
                         pd.DataFrame(), pd.DataFrame(), T0)
    assert ev.empty and incident_timeline(pd.DataFrame(), None, None, T0) == []


def test_query_signals_builds_the_long_frame():
    class FakeProm:
        def query_range(self, expr, start, end, step):
            if expr.startswith("up{"):
                return pd.DataFrame({"t": [T0, T0], "value": [1.0, 0.0],
                                     "replica": ["api1", "api2"]})
            if "p99" in expr:
                return pd.DataFrame({"t": [T0], "value": [0.2]})
            return pd.DataFrame({"t": pd.Series(dtype=float), "value": pd.Series(dtype=float)})

    df = query_signals(FakeProm(), T0, T0 + 1)
    assert sorted(map(tuple, df[["signal", "series"]].values.tolist())) == [
        ("api_up", "api1"), ("api_up", "api2"), ("p99_s", "")]
