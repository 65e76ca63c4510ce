"""Analysis on synthetic records with known answers."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from stack.analysis.records import (Incident, availability, budget_used, downtime_minutes_per_30d,
                            errors_by_kind, incidents, latency_percentiles, load_records,
                            records_frame, summary, timeline, verdict, client_note)
from stack.analysis.fields import RECORD_FIELDS


def rec(t: float, kind: str = "load", error: str = "", latency: float = 0.01,
        status: int | None = None, backend: str = "b1") -> dict:
    if status is None:
        status = 200 if error == "" else (503 if error == "http_5xx" else 0)
    return {"kind": kind, "t": t, "wall": 1.7e9 + t, "latency_s": latency, "lag_s": 0.001,
            "status": status, "error": error, "backend": backend,
            "request_id": "r" if error == "" and kind == "load" else ""}


@pytest.fixture
def thousand() -> pd.DataFrame:
    """1000 load requests at 100/s of which 3 fail, and 10 probes of which 1 fails."""
    rows = [rec(i / 100, error="http_5xx" if i in (100, 101, 500) else "") for i in range(1000)]
    rows += [rec(float(i), kind="probe", error="timeout" if i == 5 else "") for i in range(10)]
    return records_frame(rows)


def test_availability_and_downtime(thousand):
    assert availability(thousand) == pytest.approx(0.997)
    assert availability(thousand, "probe") == pytest.approx(0.9)
    assert downtime_minutes_per_30d(0.997) == pytest.approx(0.003 * 43200)  # 129.6
    assert downtime_minutes_per_30d(0.999) == pytest.approx(43.2)
    assert downtime_minutes_per_30d(1.0) == 0.0


def test_budget_used(thousand):
    assert budget_used(thousand, slo=0.999) == pytest.approx(3.0)
    assert budget_used(thousand, slo=0.99) == pytest.approx(0.3)


def test_latency_percentiles_include_failures_by_default():
    rows = [rec(i, latency=(i + 1) / 1000) for i in range(100)]  # 1..100 ms
    rows[-1] = rec(99, error="timeout", latency=5.0)
    rows.append(rec(100, error="client_overload", latency=0.0))  # never left: not counted
    df = records_frame(rows)
    p = latency_percentiles(df, ps=(50, 99, 100))
    assert p["p50"] == pytest.approx(50.5)
    assert p["p100"] == pytest.approx(5000.0)
    ok = latency_percentiles(df, ps=(50, 100), ok_only=True)
    assert ok["p100"] == pytest.approx(99.0) and ok["p50"] == pytest.approx(50.0)
    assert set(latency_percentiles(df, ps=(99.9,))) == {"p99.9"}


def test_summary(thousand):
    s = summary(thousand)
    assert (s["requests"], s["ok"], s["failed"]) == (1000, 997, 3)
    assert s["availability"] == pytest.approx(0.997)
    assert s["downtime_min_per_30d"] == pytest.approx(129.6)
    assert (s["probes"], s["probes_ok"]) == (10, 9)
    assert s["probe_availability"] == pytest.approx(0.9)
    assert s["probe_downtime_min_per_30d"] == pytest.approx(4320.0)
    assert s["p50_ms"] == pytest.approx(10.0) and s["p99_ms"] == pytest.approx(10.0)
    assert s["failed_by_kind"] == {"http_5xx": 3}
    assert s["by_backend"] == {"b1": 1000}


def test_timeline_bins_and_gaps():
    rows = [rec(0.1), rec(0.5, error="timeout", latency=1.0), rec(2.2), rec(2.7, kind="probe")]
    tl = timeline(records_frame(rows), bin_s=1.0)
    assert list(tl.columns) == ["sent", "ok", "failed", "p50_ms", "p99_ms"]
    assert list(tl.index) == [0.0, 1.0, 2.0]
    assert list(tl["sent"]) == [2, 0, 1]
    assert list(tl["ok"]) == [1, 0, 1] and list(tl["failed"]) == [1, 0, 0]
    assert tl.loc[0.0, "p50_ms"] == pytest.approx(505.0)
    assert math.isnan(tl.loc[1.0, "p99_ms"])
    assert timeline(records_frame(rows), bin_s=0.5).index[-1] == 2.0


def test_incidents_merge_failures_closer_than_the_gap():
    fails = {3, 4, 5, 7, 20}  # 5 and 7 are 2 s apart: split with the default gap of 2 s
    rows = [rec(float(i), kind="probe", error="connect" if i in fails else "")
            for i in range(30)]
    df = records_frame(rows)
    assert incidents(df) == [(3.0, 5.0, 3), (7.0, 7.0, 1), (20.0, 20.0, 1)]
    merged = incidents(df, min_gap_s=3.0)
    assert merged == [Incident(3.0, 7.0, 4), Incident(20.0, 20.0, 1)]
    assert merged[0].duration_s == 4.0
    assert incidents(df, kind="load") == []


def test_errors_by_kind(thousand):
    table = errors_by_kind(thousand)
    assert list(table.columns) == ["load", "probe"]
    assert table.loc["http_5xx"].tolist() == [3, 0]
    assert table.loc["timeout"].tolist() == [0, 1]
    assert table.index[0] == "http_5xx"


def test_empty_input(tmp_path):
    path = tmp_path / "traffic-empty.jsonl"
    path.write_text("")
    df = load_records(path)
    assert list(df.columns) == list(RECORD_FIELDS) and df.empty
    assert math.isnan(availability(df))
    assert math.isnan(downtime_minutes_per_30d(availability(df)))
    assert math.isnan(latency_percentiles(df)["p99"])
    assert math.isnan(budget_used(df))
    assert timeline(df).empty and incidents(df) == []
    assert errors_by_kind(df).empty
    s = summary(df)
    assert s["requests"] == 0 and math.isnan(s["availability"])


def test_load_records_reads_several_files_and_skips_a_torn_line(tmp_path, caplog):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(json.dumps(rec(i)) for i in range(3)) + "\n")
    b.write_text(json.dumps(rec(0, kind="probe")) + "\n" + '{"kind": "lo')
    df = load_records(a, b)
    assert len(df) == 4 and list(df["kind"]) == ["load"] * 3 + ["probe"]
    assert df["status"].dtype == "int64"
    assert "line 2" in caplog.text


def test_verdict():
    assert verdict("deploy", True, "0 failed of 1200 requests") == \
        "deploy: PASS (0 failed of 1200 requests)"
    assert verdict("chaos", False) == "chaos: FAIL"
    assert verdict("deploy", True, "0 failed", inconclusive="the load client fell behind") == \
        "deploy: INCONCLUSIVE (the load client fell behind)"
    assert verdict("deploy", False, "9 failed", inconclusive="the load client fell behind") == \
        "deploy: INCONCLUSIVE (the load client fell behind)"


def test_client_note_counts_late_and_unsent_load_requests(thousand):
    assert client_note(thousand) == ""  # every request left on time
    late = thousand.copy()
    late.loc[late.index[:10], "lag_s"] = 0.2  # 10 of 1000 late: within 1%
    assert client_note(late) == ""
    late.loc[late.index[10], "error"] = "client_overload"  # 11: more than 1%
    assert "load client fell behind: 11 of 1000 requests" in client_note(late)
    probes_late = thousand.copy()  # a late probe is not a late load request
    probes_late.loc[probes_late["kind"] == "probe", "lag_s"] = 0.5
    assert client_note(probes_late) == ""
