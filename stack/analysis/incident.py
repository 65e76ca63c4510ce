"""Incident timelines instead of guesses: "at t+12s p99 latency rose above 500 ms; at t+13s DB
connections hit the pool limit; at t+14s the uptime probe failed; at t+19s the page fired".

`incident_events()` is a pure function of three frames:

- metrics: a long frame with columns signal, wall, value (and optionally series): the signals
  of `SIGNALS` sampled over the incident window (`query_signals` fetches them from Prometheus);
- notifications: the webhook receiver's frame (`stack.analysis.notifications.read_notifications`);
- records: traffic records (`stack.analysis.records.load_records`; the probe's rows are used).

Times are given relative to the incident's start wall time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pandas as pd

from stack.analysis.slo import SloSettings, record_name

# signal -> PromQL; one value per step (the worst replica where there are several)
SIGNALS = {
    "p99_s": record_name("p99", "5m"),
    "error_ratio": record_name("error_ratio", "5m"),
    "db_in_use": ('max(db_pool_connections{state="size"} - ignoring(state) '
                  'db_pool_connections{state="available"})'),
    "db_waiting": 'max(db_pool_connections{state="waiting"})',
    "probe_success": 'min(probe_success{job="probe"})',
    "api_up": 'up{job="api"}',  # per replica: the series column holds the replica
}


@dataclass(frozen=True)
class Thresholds:
    latency_s: float = 0.5
    error_ratio: float = 0.01
    pool_max: int = 8


class RangeQueryable(Protocol):
    def query_range(self, expr: str, start: float, end: float, step: float) -> pd.DataFrame: ...


SETTLE_S = 3.0  # a recovery counts once it has lasted this long: flapping reads as one event


def _debounce(changes: list[tuple[float, bool]], walls: list[float],
              settle_s: float = SETTLE_S) -> list[tuple[float, bool]]:
    """Drop a recovery followed by a new failure within settle_s (and that failure), so a
    signal that flaps reads as one long failure. A recovery still open at the end of the
    data counts if the data go on for settle_s after it."""
    out: list[tuple[float, bool]] = []
    end = walls[-1] if walls else 0.0
    i = 0
    while i < len(changes):
        wall, bad = changes[i]
        if not bad:
            nxt = changes[i + 1][0] if i + 1 < len(changes) else None
            if nxt is not None and nxt - wall < settle_s:
                i += 2  # the recovery did not hold: skip it and the relapse
                continue
            if nxt is None and end - wall < settle_s:
                i += 1
                continue
        out.append((wall, bad))
        i += 1
    return out


def _crossings(df: pd.DataFrame, bad) -> list[tuple[float, bool]]:
    """(wall, became_bad) at each lasting change of state, starting from 'fine'."""
    out, was = [], False
    for wall, value in zip(df["wall"], df["value"]):
        now = bool(bad(value))
        if now != was:
            out.append((float(wall), now))
            was = now
    return _debounce(out, [float(w) for w in df["wall"]])


def _metric_events(metrics: pd.DataFrame, th: Thresholds) -> list[tuple[float, str, str]]:
    events: list[tuple[float, str, str]] = []
    if metrics is None or metrics.empty:
        return events
    m = metrics.sort_values("wall")
    if "series" not in m.columns:
        m = m.assign(series="")
    rules = {
        "p99_s": (lambda v: v > th.latency_s,
                  f"p99 latency rose above {th.latency_s * 1000:.0f} ms",
                  f"p99 latency fell back under {th.latency_s * 1000:.0f} ms"),
        "error_ratio": (lambda v: v > th.error_ratio,
                        f"errors rose above {th.error_ratio:.0%} of requests",
                        f"errors fell back under {th.error_ratio:.0%} of requests"),
        "db_in_use": (lambda v: v >= th.pool_max,
                      f"DB connections hit the pool limit ({th.pool_max})",
                      "DB connections fell below the pool limit"),
        "db_waiting": (lambda v: v > 0, "requests started waiting for a DB connection",
                       "no request waits for a DB connection any more"),
        "probe_success": (lambda v: v < 1, "the uptime probe failed",
                          "the uptime probe succeeded again"),
    }
    for sig, (bad, rise, fall) in rules.items():
        for _, grp in m[m["signal"] == sig].groupby("series", sort=False):
            for wall, became_bad in _crossings(grp, bad):
                events.append((wall, "metrics", rise if became_bad else fall))
    for replica, grp in m[m["signal"] == "api_up"].groupby("series", sort=False):
        name = replica or "a replica"
        for wall, became_bad in _crossings(grp, lambda v: v < 1):
            events.append((wall, "metrics", f"{name} stopped answering scrapes (up=0)"
                           if became_bad else f"{name} answered scrapes again"))
    return events


def _notification_events(notes: pd.DataFrame) -> list[tuple[float, str, str]]:
    """The first 'firing' and the first 'resolved' of each alert episode (Alertmanager repeats
    the whole group in every notification)."""
    events: list[tuple[float, str, str]] = []
    if notes is None or notes.empty:
        return events
    seen: set[tuple] = set()
    for row in notes.sort_values("received").itertuples(index=False):
        key = (row.alertname, row.startsAt, row.status)
        if key in seen:
            continue
        seen.add(key)
        what = "the page" if row.severity == "page" else f"the {row.severity or 'alert'}"
        verb = "fired" if row.status == "firing" else "resolved"
        events.append((float(row.received), "alerts", f"{what} {verb} ({row.alertname})"))
    return events


def _probe_events(records: pd.DataFrame) -> list[tuple[float, str, str]]:
    events: list[tuple[float, str, str]] = []
    if records is None or records.empty:
        return events
    probes = records[records["kind"] == "probe"].sort_values("wall")
    changes, why = [], {}
    was_ok = True
    for row in probes.itertuples(index=False):
        ok = row.error == "" and 200 <= row.status < 300
        if ok != was_ok:
            changes.append((float(row.wall), not ok))
            why[float(row.wall)] = (f"HTTP {row.status}" if row.status
                                    else (row.error or "no answer"))
            was_ok = ok
    for wall, bad in _debounce(changes, [float(w) for w in probes["wall"]]):
        events.append((wall, "probe", f"the uptime check failed ({why[wall]})" if bad
                       else "the uptime check passed again"))
    return events


def incident_events(metrics: pd.DataFrame, notifications: pd.DataFrame,
                    records: pd.DataFrame, start_wall: float,
                    thresholds: Thresholds = Thresholds()) -> pd.DataFrame:
    """Every event in time order: columns t (seconds since start_wall), wall, source, text."""
    events = (_metric_events(metrics, thresholds) + _notification_events(notifications)
              + _probe_events(records))
    df = pd.DataFrame(events, columns=["wall", "source", "text"])
    order = {"metrics": 0, "probe": 1, "alerts": 2}
    df = df.assign(t=df["wall"] - start_wall, _o=df["source"].map(order))
    df = df.sort_values(["wall", "_o"], kind="stable").drop(columns="_o")
    return df[["t", "wall", "source", "text"]].reset_index(drop=True)


def _rel(t: float) -> str:
    s = int(round(t))
    return f"t+{s}s" if s >= 0 else f"t-{-s}s"


def timeline_lines(events: pd.DataFrame) -> list[str]:
    """'at t+12s p99 latency rose above 500 ms', one line per event."""
    return [f"at {_rel(t)} {text}" for t, text in zip(events["t"], events["text"])]


def incident_timeline(metrics: pd.DataFrame, notifications: pd.DataFrame,
                      records: pd.DataFrame, start_wall: float,
                      thresholds: Thresholds = Thresholds()) -> list[str]:
    return timeline_lines(incident_events(metrics, notifications, records, start_wall,
                                          thresholds))


def query_signals(prom: RangeQueryable, start: float, end: float, step: float = 1.0,
                  signals: dict[str, str] = SIGNALS) -> pd.DataFrame:
    """The signals over [start, end] as a long frame: signal, series, wall, value."""
    frames = []
    for name, expr in signals.items():
        df = prom.query_range(expr, start, end, step)
        if df.empty:
            continue
        series = df["replica"] if "replica" in df.columns else pd.Series("", index=df.index)
        frames.append(pd.DataFrame({"signal": name, "series": series.astype(str),
                                    "wall": df["t"], "value": df["value"]}))
    if not frames:
        return pd.DataFrame(columns=["signal", "series", "wall", "value"])
    return pd.concat(frames, ignore_index=True)


def timeline_from_prometheus(prom: RangeQueryable, run_dir, start_wall: float, end_wall: float,
                             records: pd.DataFrame | None = None, step: float = 1.0,
                             thresholds: Thresholds = Thresholds(),
                             webhook: str = "webhook") -> list[str]:
    """The convenience: query the signals, read the webhook's notifications, merge."""
    from stack.analysis.notifications import read_notifications

    metrics = query_signals(prom, start_wall, end_wall, step)
    notes = read_notifications(run_dir, webhook)
    notes = notes[(notes["received"] >= start_wall) & (notes["received"] <= end_wall)]
    return incident_timeline(metrics, notes, records if records is not None else pd.DataFrame(),
                             start_wall, thresholds)


def thresholds_for(s: SloSettings, pool_max: int = 8) -> Thresholds:
    return Thresholds(latency_s=s.latency_objective_s, pool_max=pool_max)
