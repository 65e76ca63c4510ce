"""Availability over the week a replay stands for, what each incident cost, and where every
failure came from.

A replay packs a week's incidents into a minute or two, so its own availability is far worse
than the week's. A scenario says how long each incident lasts in the real week (its real
duration, the same whichever topology replays it); the replay measures, for each incident,
the share of requests that failed while its fault was in force (with the requests it cut
off in flight, and through a short grace after it as far as the failures it left behind go),
and the share that failed outside every fault window. Over the week W:

    downtime = sum over incidents of  failed share in its window * its real duration
             + failed share outside the windows * (W - the real durations' sum)
    week availability = 1 - downtime / W

An incident the lab recovered from by itself, with its fault still in force (a supervisor
restarting a crashed process, Patroni restarting the primary's Postgres, nginx passing over a
frozen replica), is counted otherwise: its failures stopped, so they last as long in the week
as they lasted in the replay, not its real duration. It counts as

    failed share in its window * the window's length   (the seconds of outage it made)

"Recovered by itself": the incident's last failure came in the first half of its window, and
at least SETTLE_S of clean traffic followed before the fault's undo. What still fails at the
end of the window (a hung process nobody restarts, a slow query until the index is added,
an error burst until the release is rolled back) is charged for its whole real duration. A
self-healing that takes longer than half the replay's window is charged as if it never came:
pessimistic, so the scenario runner lengthens a window the lab needs longer to heal in
(stack.lab.runner.heal_windows: a lost or hung Patroni primary, a supervised crash, a hung
nginx).

All functions here are pure: records frames (stack.analysis.fields) and fault windows
({"fault", "target", "start", "end"} dicts, as the scenario runner keeps them) in, numbers and
frames out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from stack.analysis.records import MINUTES_PER_30D, availability
from stack.scenario import WEEK_S, format_real

MINUTES_PER_WEEK = 7 * 24 * 60
GRACE_S = 2.0  # what a fault leaves behind right after its undo still counts as its damage
SETTLE_S = 1.0  # clean traffic before the undo that shows an incident healed by itself
OUTSIDE = "outside every fault window"
NO_PROMETHEUS = "no Prometheus in this run"


@dataclass(frozen=True)
class Window:
    """One fault in force in the replay, and how long its incident lasts in the real week."""

    fault: str
    target: str
    start: float
    end: float
    real_s: float

    @property
    def empty(self) -> bool:
        """Never in force (a fault that failed to apply): it owns no request."""
        return self.end <= self.start

    @property
    def label(self) -> str:
        return f"{self.fault} {self.target}"


def windows(faults: Sequence[Mapping[str, Any]], real_s: Sequence[float]) -> list[Window]:
    """Windows from the runner's fault dicts and each one's real duration (same order)."""
    if len(faults) != len(real_s):
        raise ValueError(f"{len(faults)} fault windows but {len(real_s)} real durations")
    return [Window(str(f["fault"]), str(f["target"]), float(f["start"]), float(f["end"]),
                   float(r)) for f, r in zip(faults, real_s)]


def _ok(df: pd.DataFrame) -> np.ndarray:
    return ((df["error"] == "") & df["status"].between(200, 299)).to_numpy()


def _load(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["kind"] == "load"]


def _done(df: pd.DataFrame) -> np.ndarray:
    """When each request ended: its scheduled time, plus how late it left, plus its latency."""
    return (df["t"] + df["lag_s"] + df["latency_s"]).to_numpy()


def _hit(t: np.ndarray, done: np.ndarray, w: Window, until: float) -> np.ndarray:
    """Requests a fault can have failed: scheduled in its window or the grace after it, or
    scheduled before it and still in flight when it began (a crash fails what it cuts off).
    None for an empty window (a fault that failed to apply was never in force)."""
    if w.empty:
        return np.zeros(len(t), dtype=bool)
    return ((t >= w.start) & (t < until)) | ((t < w.start) & (done >= w.start))


def _inside(t: np.ndarray, done: np.ndarray, ok: np.ndarray, w: Window, until: float
            ) -> np.ndarray:
    """The requests of a window: scheduled from its start to its end; the failed ones it cut
    off in flight; and on through the grace after it as far as the last failure there (what
    the fault left behind is its damage; requests that succeed after it are not part of
    the incident). None for an empty window (a fault that failed to apply)."""
    if w.empty:
        return np.zeros(len(t), dtype=bool)
    core = (t >= w.start) & (t < w.end)
    cut = ~ok & (t < w.start) & (done >= w.start)
    tail = (t >= w.end) & (t < until)
    if not (tail & ~ok).any():
        return core | cut
    return core | cut | (tail & (t <= t[tail & ~ok].max()))


def _spans(wins: Sequence[Window], run_end: float, grace_s: float
           ) -> list[tuple[float, float]]:
    """Per incident, (until, page horizon). Until: where its grace, and so its failures and
    probe failures, end: the window's end plus the grace, or the next fault's start if that
    comes first after the window's end (what fails then is the next fault's). Page
    horizon: the next fault's start, at least the window's end plus the grace (a burn-rate
    page comes late); for the last fault, any time after it."""
    out = []
    for w in wins:
        later = [o.start for o in wins if o.start > w.start]
        nxt = min(min(later) if later else run_end, run_end)
        until = w.end + grace_s if nxt <= w.end else min(w.end + grace_s, nxt)
        out.append((until, max(nxt, w.end + grace_s) if later else float("inf")))
    return out


def time_to_detect(times: np.ndarray, ok: np.ndarray, start: float, horizon: float
                   ) -> float | None:
    """Seconds from `start` to the first failed check (probe) before `horizon`; None when
    none failed."""
    seen = times[(times >= start) & (times < horizon) & ~ok]
    return float(seen.min() - start) if len(seen) else None


def time_to_recover(times: np.ndarray, ok: np.ndarray, start: float, until: float
                    ) -> float | None:
    """Seconds from `start` to the first request that succeeded after the last failure
    scheduled before `until` (the incident's end): 0.0 when none failed; None when no
    request succeeded after it, to the end of the run."""
    bad = times[(times >= start) & (times < until) & ~ok]
    if not len(bad):
        return 0.0
    after = times[ok & (times > bad.max())]
    return float(after.min() - start) if len(after) else None


def self_healed(failed: int, recover_s: float | None, w: Window,
                settle_s: float = SETTLE_S) -> bool:
    """Whether an incident's failures stopped with its fault still in force: some failed, the
    first success after the last failure came in the first half of the window, and at least
    `settle_s` of the window followed it."""
    if failed == 0 or recover_s is None:
        return False
    length = w.end - w.start
    return recover_s <= length / 2 and length - recover_s >= settle_s


def first_page(pages: Sequence[float], start: float, horizon: float) -> float | None:
    """Seconds from `start` to the first page that fired before `horizon`; None if none."""
    fired = [p for p in pages if start <= p < horizon]
    return float(min(fired) - start) if fired else None


INCIDENT_COLUMNS = ["fault", "target", "start_s", "end_s", "requests", "failed",
                    "failed_share", "real_duration", "real_s", "self_healed",
                    "week_downtime_min",
                    "detect_probe_s", "detect_page_s", "recover_s"]


def incident_table(records: pd.DataFrame, wins: Sequence[Window], *,
                   pages: Sequence[float] | None = None, grace_s: float = GRACE_S,
                   run_end: float | None = None) -> pd.DataFrame:
    """One row per incident: its window in the replay, load requests and failures in it (and
    in the grace after it, up to the last failure there), the failed share, its real
    duration and the downtime that makes in the week, the time to detect by the uptime probe
    and by a page (nan when nothing saw it, or no Prometheus ran: `pages` None), and the
    time to recover (nan: never)."""
    load = _load(records)
    probes = records[records["kind"] == "probe"]
    lt, ldone, lok = load["t"].to_numpy(), _done(load), _ok(load)
    pt, pok = probes["t"].to_numpy(), _ok(probes)
    end = run_end if run_end is not None else (float(records["t"].max()) if len(records)
                                               else 0.0)
    rows = []
    for w, (until, page_horizon) in zip(wins, _spans(wins, end, grace_s)):
        inside = _inside(lt, ldone, lok, w, until)
        n, bad = int(inside.sum()), int((inside & ~lok).sum())
        share = bad / n if n else 0.0
        detect = time_to_detect(pt, pok, w.start, until)
        page = first_page(pages, w.start, page_horizon) if pages is not None else None
        recover = time_to_recover(lt, lok, w.start, until)
        healed = self_healed(bad, recover, w)
        rows.append({
            "fault": w.fault, "target": w.target, "start_s": round(w.start, 1),
            "end_s": round(w.end, 1), "requests": n, "failed": bad, "failed_share": share,
            "real_duration": format_real(w.real_s), "real_s": w.real_s,
            "self_healed": healed,
            "week_downtime_min": share * (min(w.end - w.start, w.real_s) if healed
                                          else w.real_s) / 60.0,
            "detect_probe_s": np.nan if detect is None else detect,
            "detect_page_s": np.nan if page is None else page,
            "recover_s": np.nan if recover is None else recover,
        })
    return pd.DataFrame(rows, columns=INCIDENT_COLUMNS)


@dataclass(frozen=True)
class WeekFigures:
    """A replay's two availabilities and its incidents, as `week_figures` measured them."""

    replay_availability: float  # failed load requests over all of them, in the replay
    availability: float  # over the week the replay stands for
    represents_s: float
    incidents: pd.DataFrame  # incident_table's rows
    outside_requests: int
    outside_failed: int
    rest_s: float  # real time outside every incident
    pages_known: bool  # False: no Prometheus ran, so no page times
    slo: float = 0.999

    @property
    def outside_share(self) -> float:
        return self.outside_failed / self.outside_requests if self.outside_requests else 0.0

    @property
    def downtime_min(self) -> float:
        """Minutes of downtime in the week (or whatever real time the replay stands for)."""
        return (1.0 - self.availability) * self.represents_s / 60.0

    @property
    def downtime_min_per_week(self) -> float:
        return (1.0 - self.availability) * MINUTES_PER_WEEK

    @property
    def downtime_min_per_30d(self) -> float:
        return (1.0 - self.availability) * MINUTES_PER_30D

    @property
    def budget_min_per_week(self) -> float:
        """The SLO's allowance: 10.08 min a week at 99.9%."""
        return (1.0 - self.slo) * MINUTES_PER_WEEK

    @property
    def budget_min_per_30d(self) -> float:
        return (1.0 - self.slo) * MINUTES_PER_30D

    def meets(self, slo: float | None = None) -> bool:
        return bool(self.availability >= (self.slo if slo is None else slo))

    def headline(self) -> str:
        """One line: the week's availability and downtime beside the SLO's, and the replay's
        own figure (volatile numbers: never in a verdict line)."""
        return (f"{self.availability:.3%} over the {format_real(self.represents_s)} it stands "
                f"for: {self.downtime_min_per_week:,.1f} min down per week, "
                f"{self.downtime_min_per_30d:,.0f} min per 30 days (SLO {self.slo:.1%}: "
                f"{self.budget_min_per_week:.1f} min per week, {self.budget_min_per_30d:.1f} "
                f"min per 30 days); in the replay itself {self.replay_availability:.3%}")

    def table(self) -> pd.DataFrame:
        """The incidents as text, for a notebook or the command line: each incident's window,
        failures, real duration, its downtime in the week, time to detect and to recover."""
        def secs(v: float, missing: str) -> str:
            return missing if pd.isna(v) else f"{v:.1f} s"

        page_missing = "not paged" if self.pages_known else NO_PROMETHEUS
        rows = [{
            "incident": f"{r.fault} {r.target}",
            "replay window": f"{r.start_s:.1f}-{r.end_s:.1f} s",
            "failed": f"{r.failed} of {r.requests} ({r.failed_share:.1%})",
            "real duration": r.real_duration,
            "downtime in the week": f"{r.week_downtime_min:.1f} min",
            "detected by probe": secs(r.detect_probe_s, "not seen"),
            "paged": secs(r.detect_page_s, page_missing),
            "recovered": ("no failure" if r.failed == 0 and r.recover_s == 0
                          else secs(r.recover_s, "not recovered")
                          + (" by itself" if r.self_healed else "")),
        } for r in self.incidents.itertuples()]
        rows.append({
            "incident": "the rest of the week",
            "replay window": "outside the windows",
            "failed": f"{self.outside_failed} of {self.outside_requests} "
                      f"({self.outside_share:.1%})",
            "real duration": format_real(self.rest_s) if self.rest_s > 0 else "0s",
            "downtime in the week": f"{self.outside_share * self.rest_s / 60:.1f} min",
            "detected by probe": "", "paged": "", "recovered": "",
        })
        return pd.DataFrame(rows).set_index("incident")


def week_figures(records: pd.DataFrame, wins: Sequence[Window], *,
                 represents_s: float = WEEK_S, pages: Sequence[float] | None = None,
                 grace_s: float = GRACE_S, run_end: float | None = None,
                 slo: float = 0.999) -> WeekFigures:
    """The replay's availability and the week's (see the module's docstring for the sum).

    `pages`: seconds after the run's start at which a page fired; None where no Prometheus
    ran. A real-duration total above `represents_s` is an error: the scenario validates it."""
    real_total = sum(w.real_s for w in wins)
    if real_total > represents_s * (1 + 1e-9):
        raise ValueError(f"the incidents' real durations ({format_real(real_total)}) exceed "
                         f"the {format_real(represents_s)} the replay stands for")
    table = incident_table(records, wins, pages=pages, grace_s=grace_s, run_end=run_end)
    load = _load(records)
    lt, ldone, lok = load["t"].to_numpy(), _done(load), _ok(load)
    outside = np.ones(len(lt), dtype=bool)
    end = run_end if run_end is not None else (float(records["t"].max()) if len(records)
                                               else 0.0)
    for w, (until, _) in zip(wins, _spans(wins, end, grace_s)):
        outside &= ~_inside(lt, ldone, lok, w, until)
    n_out, bad_out = int(outside.sum()), int((outside & ~lok).sum())
    rest = represents_s - real_total
    share_out = bad_out / n_out if n_out else 0.0
    down_s = float(table["week_downtime_min"].sum()) * 60.0 + share_out * rest
    return WeekFigures(replay_availability=availability(records, "load"),
                       availability=1.0 - down_s / represents_s, represents_s=represents_s,
                       incidents=table, outside_requests=n_out, outside_failed=bad_out,
                       rest_s=rest, pages_known=pages is not None, slo=slo)


def error_subkind(error: str, status: int) -> str:
    """An error kind with its status where there is one: http_5xx -> http_502, ..."""
    if error in ("http_5xx", "http_4xx") and status > 0:
        return f"http_{status}"
    return error or f"http_{status}"


EXPLAIN_COLUMNS = ["answered_by", "fault", "error", "failed", "first_t", "last_t"]


def explain_failures(records: pd.DataFrame, wins: Sequence[Window], *, front: str = "",
                     grace_s: float = GRACE_S) -> pd.DataFrame:
    """Every failed load request, counted by who answered it (the replica named by its
    X-Backend header; `front`, e.g. "nginx", for an answer no replica signed; "no answer" for
    a timeout or a refused connection), the fault window(s) it fell in (scheduled in the
    window or the grace after it, or in flight when the fault began; OUTSIDE when none: a
    failure nothing explains), and its error kind with the status (http_502, timeout, ...),
    with the scheduled times of the first and last. Most frequent first."""
    load = _load(records)
    bad = load[~_ok(load)]
    if bad.empty:
        return pd.DataFrame(columns=EXPLAIN_COLUMNS).astype(
            {"failed": "int64", "first_t": "float64", "last_t": "float64"})
    t, done = bad["t"].to_numpy(), _done(bad)
    end = float(records["t"].max())
    hits = [_hit(t, done, w, until) for w, (until, _) in zip(wins, _spans(wins, end, grace_s))]
    labels = [" + ".join(w.label for w, h in zip(wins, hits) if h[i]) or OUTSIDE
              for i in range(len(t))]
    status = bad["status"].to_numpy()
    backend = bad["backend"].to_numpy()
    who = [b if b else ((front or "server") if s > 0 else "no answer")
           for b, s in zip(backend, status)]
    kinds = [error_subkind(e, int(s)) for e, s in zip(bad["error"].to_numpy(), status)]
    frame = pd.DataFrame({"answered_by": who, "fault": labels, "error": kinds, "t": t})
    out = (frame.groupby(["answered_by", "fault", "error"])["t"]
           .agg(failed="size", first_t="min", last_t="max").reset_index())
    out[["first_t", "last_t"]] = out[["first_t", "last_t"]].round(1)
    return out.sort_values(["failed", "first_t"], ascending=[False, True], kind="stable"
                           ).reset_index(drop=True)[EXPLAIN_COLUMNS]


def unexplained(table: pd.DataFrame) -> int:
    """Failed requests in an explain_failures table that fell in no fault window."""
    return int(table.loc[table["fault"] == OUTSIDE, "failed"].sum()) if len(table) else 0
