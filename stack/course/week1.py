"""What the notebooks show about a scenario run: the baseline figures, each fault's damage,
the errors Sentry captured grouped by cause, and stable verdict lines for nbval."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from stack.analysis import records as analysis
from stack.lab.runner import ScenarioResult
from stack.scenario import Scenario


def baseline(result: ScenarioResult, slo: float = 0.999) -> pd.DataFrame:
    """Availability over the week the replay stands for, with the downtime it means per week
    and per 30 days beside the SLO's; then the replay's own figures (request- and
    probe-based), and latency percentiles."""
    s = result.summary()
    w = result.week(slo=slo)
    rows = [
        ("availability over the week", f"{w.availability:.3%}"),
        ("downtime per week", f"{w.downtime_min_per_week:,.1f} min"),
        ("downtime per 30 days", f"{w.downtime_min_per_30d:,.0f} min"),
        (f"the SLO: {slo:.1%}", f"{w.budget_min_per_week:.1f} min per week, "
         f"{w.budget_min_per_30d:.1f} per 30 days"),
        ("requests sent", f"{s['requests']}"),
        ("failed requests", f"{s['failed']}"),
        ("availability in the replay (requests)", f"{s['availability']:.3%}"),
        ("availability in the replay (uptime probe)", f"{s['probe_availability']:.3%}"),
        ("p50 latency", f"{s['p50_ms']:.1f} ms"),
        ("p95 latency", f"{s['p95_ms']:.1f} ms"),
        ("p99 latency", f"{s['p99_ms']:.1f} ms"),
    ]
    return pd.DataFrame(rows, columns=["measure", result.topology]).set_index("measure")


def wall_offset(records: pd.DataFrame) -> float:
    """Unix time of the run's t = 0, from the records themselves."""
    return float((records["wall"] - records["t"]).median()) if len(records) else 0.0


def sentry_events(run_dir: str | Path) -> pd.DataFrame:
    """The events the real sentry-sdk captured into the lab's local store."""
    from stack.api.sentry import read_events

    rows = []
    for ev in read_events(Path(run_dir) / "sentry"):
        exc = (ev.get("exception") or [{}])[-1]
        tags = ev.get("tags") or {}
        ts = ev.get("timestamp")
        wall = datetime.fromisoformat(ts).timestamp() if isinstance(ts, str) else float(ts or 0)
        rows.append({"wall": wall, "replica": tags.get("replica", ""),
                     "cause": tags.get("cause", "unknown"), "type": exc.get("type", ""),
                     "message": (exc.get("value") or ev.get("message") or "")[:120]})
    return pd.DataFrame(rows, columns=["wall", "replica", "cause", "type", "message"])


def errors_by_cause(result: ScenarioResult, run_dir: str | Path) -> pd.DataFrame:
    """Sentry's view: events grouped by cause and exception type, with one example each."""
    ev = sentry_events(run_dir)
    if ev.empty:
        return pd.DataFrame(columns=["cause", "type", "events", "example"])
    grouped = ev.groupby(["cause", "type"]).agg(events=("message", "size"),
                                                example=("message", "first")).reset_index()
    return grouped.sort_values("events", ascending=False).reset_index(drop=True)


# A frozen process that is resumed reports at once what timed out while it was stopped (a
# request whose wait for a database connection ran out during the freeze): those events come
# at the instant the fault is undone, which the run's clocks place within milliseconds of it.
RESUME_S = 0.25


def fault_damage(result: ScenarioResult, run_dir: str | Path | None = None,
                 grace_s: float = 2.0) -> pd.DataFrame:
    """Per fault: failed requests, seconds the uptime probe saw down, and Sentry events in
    its window (the window runs until the fault is undone, plus a grace for recovery); apart,
    the Sentry events while the fault was in place (up to RESUME_S before it was undone)."""
    df = result.records
    load = df[df["kind"] == "load"]
    probes = df[df["kind"] == "probe"]
    ev = sentry_events(run_dir) if run_dir else pd.DataFrame(columns=["wall"])
    offset = wall_offset(df)
    interval = result.scenario.traffic.probe_interval_s
    rows = []
    for f in result.faults:
        lo, hi = f["start"], f["end"] + grace_s
        in_load = load[(load["t"] >= lo) & (load["t"] < hi)]
        in_probe = probes[(probes["t"] >= lo) & (probes["t"] < hi)]
        t_ev = ev["wall"] - offset
        ev_in = ev[(t_ev >= lo) & (t_ev < hi)] if len(ev) else ev
        ev_down = ev[(t_ev >= lo) & (t_ev < f["end"] - RESUME_S)] if len(ev) else ev
        rows.append({
            "fault": f["fault"], "target": f["target"], "start_s": round(lo, 1),
            "end_s": round(f["end"], 1),
            "failed_requests": int((in_load["status"] // 100 != 2).sum()),
            "users_saw": _main_error(in_load),
            "probe_down_s": float((in_probe["status"] // 100 != 2).sum() * interval),
            "sentry_events": int(len(ev_in)),
            "sentry_while_down": int(len(ev_down)),
            "error": f.get("error", ""),
        })
    return pd.DataFrame(rows)


def _main_error(load: pd.DataFrame) -> str:
    """The most common way requests failed (timeout, connect, http_5xx, ...), or 'ok'."""
    failed = load[load["status"] // 100 != 2]
    return str(failed["error"].mode().iloc[0]) if len(failed) else "ok"


def verdicts_week1(result: ScenarioResult, damage: pd.DataFrame, slo: float = 0.999
                   ) -> list[str]:
    """Stable lines that hold on every run of the BEFORE lab under production_week; the SLO
    is judged over the week the replay stands for."""
    week = result.week(slo=slo)
    hurt = damage[damage["failed_requests"] > 0]
    silent = damage[(damage["failed_requests"] > 0) & (damage["sentry_while_down"] == 0)]
    kinds = {"crash", "hang", "memory_leak", "bad_model"}
    outages = damage[damage["fault"].isin(kinds)]
    return [
        # the week's expected finding, the one week 2 starts from; a FAIL if it did not hold
        "finding: the baseline misses the 99.9% SLO over the week it stands for"
        if not week.meets() else
        analysis.verdict("the baseline misses the 99.9% SLO over the week", False,
                         "it meets it: the faults did less harm than the course expects"),
        analysis.verdict("every fault in the week caused failed requests",
                         len(hurt) == len(damage), f"{len(hurt)} of {len(damage)} faults"),
        analysis.verdict("the uptime probe saw every outage of the API process",
                         bool((outages["probe_down_s"] > 0).all())
                         and set(outages["fault"]) == kinds,
                         "crash, hang, memory leak, bad model"),
        analysis.verdict("a crashed or frozen process reports nothing to Sentry while it is "
                         "down",
                         {"crash", "hang"} <= set(silent["fault"]),
                         "crash and hang were seen by the uptime probe alone"),
    ]


def saved_result(topology: str, scenario: Scenario, saved: str | Path, **run_kw: Any
                 ) -> tuple[ScenarioResult, str]:
    """An earlier week's run of this scenario on this topology, saved in reports/; replayed
    now if it is missing or was made with other settings. Returns it and where it came from."""
    from stack.lab.lab import Lab
    from stack.lab.runner import run_scenario

    saved = Path(saved)
    try:
        res = ScenarioResult.load(saved)
        if res.scenario == scenario and res.records_path.exists():
            return res, "an earlier week's run"
    except (OSError, ValueError, KeyError):
        pass
    with Lab(topology) as lab:
        res = run_scenario(lab, scenario, **run_kw)
        res = ScenarioResult.load(res.save(saved))
    return res, "replayed now"


def before_result(scenario: Scenario, saved: str | Path, **run_kw: Any
                  ) -> tuple[ScenarioResult, str]:
    """Week 1's BEFORE run of this scenario (see saved_result)."""
    res, source = saved_result("before", scenario, saved, **run_kw)
    return res, ("week 1's run" if source != "replayed now" else source)


def compare(results: dict[str, ScenarioResult]) -> pd.DataFrame:
    """The same scenario's figures side by side, one column per run."""
    return pd.concat([baseline(r).rename(columns={r.topology: name})
                      for name, r in results.items()], axis=1)


def figures(runs: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """An experiment's figures (everything but its records), one column per run."""
    return pd.DataFrame({name: {k: v for k, v in r.items() if k != "records"}
                         for name, r in runs.items()})
