"""The week a replay stands for: availability from each incident's failed share and real
duration, detection and recovery times, and every failure explained, on synthetic records
with known answers."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from stack.analysis.records import records_frame
from stack.analysis.week import (NO_PROMETHEUS, OUTSIDE, Window, error_subkind,
                                 explain_failures, incident_table, time_to_recover,
                                 unexplained, week_figures, windows)

WEEK = 7 * 86400.0


def rec(t: float, kind: str = "load", error: str = "", status: int | None = None,
        backend: str = "api1") -> dict:
    if status is None:
        status = 200 if error == "" else (503 if error == "http_5xx" else 0)
    return {"kind": kind, "t": t, "wall": 1.7e9 + t, "latency_s": 0.01, "lag_s": 0.0,
            "status": status, "error": error, "backend": backend if status else "",
            "request_id": ""}


def run(failing: dict[tuple[float, float], str], duration: float = 100.0, rate: int = 10,
        probe_down: tuple[float, float] | None = None) -> pd.DataFrame:
    """`rate` load requests/s for `duration` s; in each [a, b) of `failing`, every request
    fails with that error. Probes every second, failing within `probe_down`."""
    rows = []
    for i in range(int(duration * rate)):
        t = i / rate
        err = next((e for (a, b), e in failing.items() if a <= t < b), "")
        rows.append(rec(t, error=err))
    for i in range(int(duration)):
        down = probe_down is not None and probe_down[0] <= i < probe_down[1]
        rows.append(rec(float(i), kind="probe", error="connect" if down else ""))
    return records_frame(rows)


def test_the_week_weighs_each_window_by_its_real_duration():
    # a hang [10, 20): 5 s of it fail, up to just before its undo (half the window, grace
    # 0): still failing when it ended, so charged for its real duration, 1 h
    df = run({(14.0, 19.0): "connect"})
    wins = [Window("crash", "api1", 10.0, 20.0, 3600.0)]
    w = week_figures(df, wins, represents_s=WEEK, grace_s=0.0)
    assert w.replay_availability == pytest.approx(0.95)  # 50 of 1000
    assert w.incidents.loc[0, "failed_share"] == pytest.approx(0.5)
    assert w.incidents.loc[0, "week_downtime_min"] == pytest.approx(30.0)
    assert w.outside_failed == 0 and w.outside_requests == 900
    assert w.downtime_min == pytest.approx(30.0)
    assert w.availability == pytest.approx(1 - 1800 / WEEK)
    assert w.downtime_min_per_week == pytest.approx(30.0)
    assert w.downtime_min_per_30d == pytest.approx(30.0 * 30 / 7)
    assert w.budget_min_per_week == pytest.approx(10.08)
    assert not w.meets() and w.meets(slo=0.99)


def test_an_incident_that_healed_by_itself_counts_the_seconds_it_failed():
    # a crash [10, 20) that a supervisor undid after 2 s: 20 failures at 10 req/s, real 1 h
    df = run({(10.0, 12.0): "connect"})
    wins = [Window("crash", "api1", 10.0, 20.0, 3600.0)]
    w = week_figures(df, wins, represents_s=WEEK, grace_s=0.0)
    row = w.incidents.loc[0]
    assert bool(row["self_healed"]) and row["failed_share"] == pytest.approx(0.2)
    assert row["week_downtime_min"] == pytest.approx(2.0 / 60)  # 2 s, not 12 min
    assert w.availability == pytest.approx(1 - 2.0 / WEEK)
    assert "2.0 s by itself" in w.table().loc["crash api1", "recovered"]


@pytest.mark.parametrize("failing, healed", [
    ({(10.0, 15.0): "connect"}, True),  # recovered at half the window, 5 s clean after it
    ({(10.0, 15.1): "connect"}, False),  # past half the window: maybe not over yet
    ({(10.0, 10.5): "connect", (17.0, 17.1): "connect"}, False),  # failed again late
    ({(19.5, 20.0): "connect"}, False),  # failing at the undo
])
def test_self_healed_needs_the_first_half_and_clean_traffic_after_it(failing, healed):
    df = run(failing)
    wins = [Window("crash", "api1", 10.0, 20.0, 3600.0)]
    row = week_figures(df, wins, represents_s=WEEK, grace_s=0.0).incidents.loc[0]
    assert bool(row["self_healed"]) is healed
    expected_s = row["failed_share"] * (10.0 if healed else 3600.0)
    assert row["week_downtime_min"] == pytest.approx(expected_s / 60)


def test_failures_outside_the_windows_count_over_the_rest_of_the_week():
    df = run({(50.0, 51.0): "timeout"})  # 10 of the 900 requests outside the window
    wins = [Window("hang", "api2", 10.0, 20.0, 86400.0)]
    w = week_figures(df, wins, represents_s=WEEK, grace_s=0.0)
    assert w.incidents.loc[0, "failed"] == 0
    assert w.outside_failed == 10 and w.rest_s == pytest.approx(6 * 86400.0)
    assert w.availability == pytest.approx(1 - (10 / 900) * 6 / 7)


def test_the_grace_after_a_fault_counts_as_its_damage():
    df = run({(20.0, 21.0): "http_5xx"})
    wins = [Window("crash", "nginx", 10.0, 20.0, 1500.0)]
    assert week_figures(df, wins, grace_s=0.0).outside_failed == 10
    w = week_figures(df, wins, grace_s=2.0)
    assert w.outside_failed == 0 and w.incidents.loc[0, "failed"] == 10
    assert w.incidents.loc[0, "requests"] == 110  # up to the last failure, not the grace's end
    assert w.outside_requests == 890
    clean = week_figures(run({}), wins, grace_s=2.0)  # no damage left: the window is the fault's
    assert clean.incidents.loc[0, "requests"] == 100


def test_no_failures_means_the_week_is_whole():
    df = run({})
    w = week_figures(df, [Window("crash", "api1", 10.0, 20.0, 1500.0)])
    assert w.availability == 1.0 and w.replay_availability == 1.0 and w.meets()
    assert w.downtime_min_per_30d == 0.0


def test_real_durations_beyond_the_week_are_refused():
    with pytest.raises(ValueError, match="exceed"):
        week_figures(run({}), [Window("crash", "api1", 1.0, 2.0, 8 * 86400.0)])


def test_detect_and_recover_per_incident():
    df = run({(12.0, 16.0): "connect"}, probe_down=(13, 16))
    wins = [Window("crash", "api1", 10.0, 20.0, 1500.0),
            Window("slow_db", "api2", 40.0, 45.0, 7200.0)]
    table = incident_table(df, wins, pages=[14.5, 80.0])
    first, second = table.iloc[0], table.iloc[1]
    assert first["detect_probe_s"] == pytest.approx(3.0)
    assert first["detect_page_s"] == pytest.approx(4.5)
    assert first["recover_s"] == pytest.approx(6.0)  # 16.0, the first ok after the last failure
    assert math.isnan(second["detect_probe_s"]) and second["recover_s"] == 0.0
    assert second["detect_page_s"] == pytest.approx(40.0)  # the page at 80 s is before its horizon
    assert second["real_duration"] == "2h"


def test_without_prometheus_the_table_says_so():
    df = run({(12.0, 16.0): "connect"})
    w = week_figures(df, [Window("crash", "api1", 10.0, 20.0, 1500.0)])
    text = w.table()
    assert text.loc["crash api1", "paged"] == NO_PROMETHEUS
    assert text.loc["crash api1", "real duration"] == "25m"
    assert text.loc["the rest of the week", "real duration"] == "6d23h35m"
    paged = week_figures(df, [Window("crash", "api1", 10.0, 20.0, 1500.0)], pages=[])
    assert paged.table().loc["crash api1", "paged"] == "not paged"
    assert "min down per week" in w.headline() and "in the replay itself" in w.headline()


def test_a_run_that_never_recovers():
    df = run({(10.0, 100.0): "connect"})
    table = incident_table(df, [Window("crash", "api1", 10.0, 20.0, 1500.0)])
    assert math.isnan(table.loc[0, "recover_s"])


def test_time_to_recover_ignores_failures_before_the_start():
    import numpy as np

    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    ok = np.array([False, True, False, False, True])
    assert time_to_recover(t, ok, 1.0, 10.0) == pytest.approx(3.0)
    assert time_to_recover(t, ok, 4.0, 10.0) == 0.0
    assert time_to_recover(t, ok, 1.0, 3.5) == pytest.approx(3.0)  # 4.0: past the window
    assert time_to_recover(t, ok, 1.0, 2.5) == pytest.approx(3.0)  # 3.0 failed too
    assert time_to_recover(t, np.array([True, True, False, False, False]), 1.0, 3.0) is None


def test_an_incident_ends_where_the_next_fault_begins():
    # a hang [10, 20) whose failures stop at 20, then a restart at 21 failing [21, 22)
    df = run({(10.0, 20.0): "timeout", (21.0, 22.0): "connect"}, probe_down=(21, 22))
    wins = [Window("hang", "api1", 10.0, 20.0, 2700.0),
            Window("restart", "api1", 21.0, 22.0, 120.0)]
    table = incident_table(df, wins, grace_s=2.0)
    assert table.loc[0, "recover_s"] == pytest.approx(10.0)  # the restart's failures are its own
    assert math.isnan(table.loc[0, "detect_probe_s"])  # the probe failed in the restart only
    assert table.loc[1, "recover_s"] == pytest.approx(1.0)
    assert table.loc[1, "detect_probe_s"] == 0.0


def test_a_request_cut_off_in_flight_counts_for_the_fault_that_cut_it():
    rows = [rec(i / 10) for i in range(400)]
    cut = rec(9.8, error="read", status=0)  # left at 9.8 s, cut off at 10.3 s by the crash
    cut["latency_s"] = 0.5
    early = rec(5.0, error="timeout", status=0)  # ended at 8 s, before the crash
    early["latency_s"] = 3.0
    rows[98], rows[50] = cut, early
    df = records_frame(rows)
    wins = [Window("crash", "nginx", 10.0, 12.0, 1500.0)]
    table = explain_failures(df, wins, front="nginx")
    got = {(r.fault, r.error): r.failed for r in table.itertuples()}
    assert got == {("crash nginx", "read"): 1, (OUTSIDE, "timeout"): 1}
    w = week_figures(df, wins)
    assert w.incidents.loc[0, "failed"] == 1 and w.incidents.loc[0, "requests"] == 21
    assert w.outside_failed == 1 and w.outside_requests == 379
    assert w.incidents.loc[0, "recover_s"] == 0.0  # nothing scheduled in it failed


def test_windows_from_the_runner_pair_with_real_durations():
    faults = [{"fault": "crash", "target": "api1", "start": 1.0, "end": 2.0, "error": ""}]
    assert windows(faults, [60.0]) == [Window("crash", "api1", 1.0, 2.0, 60.0)]
    with pytest.raises(ValueError):
        windows(faults, [])


def test_every_failure_is_explained_by_who_answered_its_window_and_kind():
    rows = [rec(t / 10) for t in range(300)]
    rows += [rec(5.0, error="http_5xx", status=502, backend=""),  # nginx's own 502
             rec(5.1, error="http_5xx", status=503, backend="api2"),  # a replica's 503
             rec(5.2, error="timeout"),  # no answer at all
             rec(5.3, error="timeout"),
             rec(25.0, error="connect")]  # outside every window
    df = records_frame(rows)
    wins = [Window("crash", "api2", 4.0, 6.0, 1500.0), Window("hang", "redis", 5.2, 8.0, 60.0)]
    table = explain_failures(df, wins, front="nginx", grace_s=0.0)
    assert list(table.columns) == ["answered_by", "fault", "error", "failed", "first_t",
                                   "last_t"]
    got = {(r.answered_by, r.fault, r.error): r.failed for r in table.itertuples()}
    assert got == {("nginx", "crash api2", "http_502"): 1,
                   ("api2", "crash api2", "http_503"): 1,
                   ("no answer", "crash api2 + hang redis", "timeout"): 2,
                   ("no answer", OUTSIDE, "connect"): 1}
    assert table.iloc[0]["failed"] == 2
    assert (table.iloc[0]["first_t"], table.iloc[0]["last_t"]) == (5.2, 5.3)
    assert unexplained(table) == 1
    assert unexplained(explain_failures(df, wins, grace_s=20.0)) == 0
    empty = explain_failures(records_frame([rec(1.0)]), wins)
    assert empty.empty and unexplained(empty) == 0


def test_error_subkinds():
    assert error_subkind("http_5xx", 504) == "http_504"
    assert error_subkind("http_4xx", 429) == "http_429"
    assert error_subkind("timeout", 0) == "timeout"


def test_a_fault_that_failed_to_apply_owns_no_failure():
    # bad_model failed to apply at 30 (an empty window); a crash at 40 fails [40, 41)
    df = run({(40.0, 41.0): "connect"})
    wins = [Window("bad_model", "api2", 30.0, 30.0, 1500.0),
            Window("crash", "postgres", 40.0, 48.0, 1500.0)]
    w = week_figures(df, wins, represents_s=WEEK, grace_s=2.0)
    assert w.incidents.loc[0, "requests"] == 0 and w.incidents.loc[0, "week_downtime_min"] == 0
    assert w.incidents.loc[1, "failed"] == 10 and w.incidents.loc[1, "self_healed"]
    explained = explain_failures(df, wins, grace_s=2.0)
    assert set(explained["fault"]) == {"crash postgres"}
