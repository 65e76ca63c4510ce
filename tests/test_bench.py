"""The bench's arithmetic (its figures are printed, never asserted; this checks how they are
computed)."""
from __future__ import annotations

import pandas as pd

from stack import bench


def test_per_request_divides_each_process_cpu_by_the_window_requests_and_served():
    load = pd.DataFrame({"backend": ["api1", "api1", "api2", "api1"]})
    before = {"api1": 1.0, "api2": 2.0, "etcd": 0.5}
    after = {"api1": 1.012, "api2": 2.004, "etcd": 0.502}
    w = bench.per_request(before, after, load)
    assert w["requests"] == 4
    assert round(w["ms"]["api1"], 6) == 3.0 and round(w["ms"]["etcd"], 6) == 0.5
    assert round(w["per_served"]["api1"], 6) == 4.0 and round(w["per_served"]["api2"], 6) == 4.0
    assert "etcd" not in w["per_served"], "only a process that served requests has the figure"


def test_report_puts_the_steady_and_fresh_windows_side_by_side():
    def window(ms: float) -> dict:
        return {"requests": 800, "seconds": 10.0,
                "ms": {"api1": ms, "etcd": 0.1, bench.CLIENT: 0.4},
                "per_served": {"api1": 2 * ms}}
    text = bench.report_cpu({"rate": 80.0, "duration_s": 40.0, "pace_ms": 14.0,
                             "windows": {"fresh": window(1.5), "steady": window(1.0)},
                             "requests": 3200, "failed": 0, "late": 0,
                             "client_whole_ms": 0.45, "restart_s": 1.0, "restart_cpu_s": 0.9})
    assert "  api1                1.00 ms    1.50 ms" in text
    assert "  total               1.50 ms    2.00 ms" in text
    assert "0.8% of one core steady" in text  # etcd 0.1 ms at 80 req/s
    assert text.splitlines()[-1].startswith("  api1 restart to ready")


def test_the_throughput_run_reports_its_first_seconds_apart():
    t = [0.5, 1.0, 3.9, 4.0, 10.0]
    df = pd.DataFrame({"kind": ["load"] * 5 + ["probe"], "t": t + [1.0],
                       "latency_s": [0.3, 0.2, 0.1, 0.002, 0.004, 0.001],
                       "status": [200, 0, 200, 200, 200, 200],
                       "error": ["", "timeout", "", "", "", ""]})
    parts = bench.ramp_and_rest(df)
    assert parts["ramp"]["requests"] == 3 and parts["ramp"]["failed"] == 1
    assert parts["rest"]["requests"] == 2 and parts["rest"]["failed"] == 0
    assert round(parts["rest"]["p50_ms"], 6) == 3.0, "answered requests only, probes left out"


def test_overload_counts_outcomes_and_reads_its_last_seconds():
    df = pd.DataFrame({"kind": ["load"] * 6 + ["probe"],
                       "t": [1.0, 2.0, 3.0, 16.0, 18.0, 19.0, 19.5],
                       "latency_s": [0.5, 0.001, 2.0, 0.004, 0.002, 0.006, 0.001],
                       "status": [200, 503, 0, 200, 200, 503, 200],
                       "error": ["", "http_5xx", "timeout", "", "", "http_5xx", ""]})
    assert bench.outcomes(df) == {"ok": 3, "503": 2, "timeout": 1}
    assert round(bench.last_seconds_p50(df, 20.0), 6) == 3.0  # answered, t >= 15, no probe
    line = bench.report_overload({"rate": 650.0, "duration_s": 20.0, "outcomes":
                                  bench.outcomes(df), "p50_ms": 4.0, "last_p50_ms": 3.0})
    assert "3 ok = 0 ok/s; not ok: 2 503, 1 timeout; p50 4.0 ms" in line


HEY_SUMMARY = """
Summary:
  Total:	9.1885 secs
  Slowest:	0.1052 secs
  Requests/sec:	870.6529

Latency distribution:
  10% in 0.0101 secs
  50% in 0.0166 secs
  99% in 0.0448 secs

Status code distribution:
  [200]	7990 responses
  [503]	10 responses
"""


def test_hey_summary_is_read_into_rate_percentiles_and_statuses():
    f = bench.parse_hey(HEY_SUMMARY)
    assert f["rps"] == 870.6529 and f["statuses"] == {200: 7990, 503: 10}
    assert round(f["p50_ms"], 6) == 16.6 and round(f["p99_ms"], 6) == 44.8
    line = bench.report_capacity({"requests": 8000, "concurrency": 16, **f})
    assert "871 req/s, 7990 of 8000 answered 200" in line


def test_hey_output_without_a_rate_is_an_error_that_shows_it():
    import pytest
    with pytest.raises(ValueError, match="no Requests/sec"):
        bench.parse_hey("Error: connection refused")
