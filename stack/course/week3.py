"""Week 3's incident run: replay a scenario against a monitored lab while the health state
is sampled every second, then gather what the monitoring saw: state changes, pages, the
reconstructed timeline, and how much error budget was gone when the page fired."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from stack.analysis import health, incident
from stack.analysis.notifications import read_notifications
from stack.lab.lab import Lab
from stack.lab.runner import ScenarioResult, run_scenario
from stack.scenario import Scenario
from stack.analysis.slo import SloSettings

PLAYBOOK_WINDOW_H = 30 * 24  # the SLO's window: 30 days of playbook hours


class HealthWatcher:
    """A background thread that records green/yellow/red once per interval; with `path`,
    every sample is also appended there as a JSON line (the run directory keeps why each state
    was what it was, also after the kernel that held the rows is gone)."""

    def __init__(self, prom: Any, settings: SloSettings, interval: float = 1.0,
                 path: Path | None = None):
        self.prom, self.settings, self.interval = prom, settings, interval
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def __enter__(self) -> "HealthWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            wall = time.time()
            try:
                st = health.state(self.prom, self.settings)
                self.rows.append({"wall": wall, "color": st.color,
                                  "reasons": "; ".join(st.reasons), "action": st.action})
            except Exception as exc:  # Prometheus busy or restarting: note it, keep going
                self.rows.append({"wall": wall, "color": "unknown", "reasons": str(exc),
                                  "action": ""})
            if self.path is not None:
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(self.rows[-1]) + "\n")
            self._stop.wait(self.interval)

    def changes(self, start_wall: float) -> pd.DataFrame:
        """Only the rows where the color changed, with t relative to start_wall."""
        df = pd.DataFrame(self.rows, columns=["wall", "color", "reasons", "action"])
        if df.empty:
            return df.assign(t=[])
        df = df[df["color"] != df["color"].shift()]
        return df.assign(t=(df["wall"] - start_wall).round(1))[["t", "color", "reasons",
                                                                  "action"]]


@dataclass
class IncidentRun:
    result: ScenarioResult
    start_wall: float
    end_wall: float
    states: pd.DataFrame
    notifications: pd.DataFrame
    timeline: list[str] = field(default_factory=list)
    settings: SloSettings = field(default_factory=SloSettings)

    def pages(self) -> pd.DataFrame:
        """Page notifications (firing and resolved) with t relative to the start."""
        n = self.notifications
        n = n[n["severity"] == "page"] if len(n) else n
        return n.assign(t=(n["received"] - self.start_wall).round(1))[
            ["t", "status", "alertname"]] if len(n) else pd.DataFrame(
                columns=["t", "status", "alertname"])

    def first_page_t(self) -> float | None:
        p = self.pages()
        firing = p[p["status"] == "firing"]
        return float(firing["t"].min()) if len(firing) else None

    def first_page_resolved(self) -> bool:
        """The alert that paged first sent its resolution before the run's end."""
        p = self.pages()
        firing = p[p["status"] == "firing"].sort_values("t")
        if firing.empty:
            return False
        first = firing.iloc[0]
        return bool(((p["alertname"] == first["alertname"]) & (p["status"] == "resolved")
                     & (p["t"] >= first["t"])).any())

    def budget_spent_at(self, t: float | None) -> float | None:
        """Fraction of the 30-day error budget the failed requests up to t had used. The
        lab's time is compressed: `time_scale_s` seconds stand for one hour, so 30 days are
        720 * time_scale_s seconds of traffic at the run's rate."""
        if t is None:
            return None
        load = self.result.records
        load = load[load["kind"] == "load"]
        rate = len(load) / max(self.result.scenario.duration_s, 1e-9)
        window_requests = rate * PLAYBOOK_WINDOW_H * self.settings.time_scale_s
        failed = int(((load["t"] <= t) & (load["status"] // 100 != 2)).sum())
        return failed / (self.settings.budget * window_requests)

    def first_failure_t(self) -> float | None:
        load = self.result.records
        bad = load[(load["kind"] == "load") & (load["status"] // 100 != 2)]
        return float(bad["t"].min()) if len(bad) else None

    def first_t(self, colors: tuple[str, ...] = ("yellow", "red")) -> float | None:
        """When the health state first took one of `colors` (t from the run's start)."""
        st = self.states[self.states["color"].isin(colors)]
        return float(st["t"].min()) if len(st) else None

    def warned_before_errors(self) -> bool:
        """The state left green (yellow or red) before the first failed request."""
        warned, failed = self.first_t(), self.first_failure_t()
        return warned is not None and (failed is None or warned < failed)

    def first_fault_alone(self) -> tuple[set[str], int]:
        """While the first fault alone was in force (from its start to the next fault's
        start, or its own end): the health states seen, and the uptime probe's failures."""
        wins = sorted(self.result.faults, key=lambda f: f["start"])
        if not wins:
            return set(), 0
        start = wins[0]["start"]
        end = wins[1]["start"] if len(wins) > 1 else (wins[0]["end"] or start)
        st = self.states
        before = st[st["t"] <= start]
        colors = set(st[(st["t"] > start) & (st["t"] < end)]["color"])
        if len(before):
            colors.add(before.iloc[-1]["color"])
        rec = self.result.records
        probes = rec[(rec["kind"] == "probe") & (rec["t"] >= start) & (rec["t"] < end)]
        failed = int(((probes["error"] != "") | (probes["status"] // 100 != 2)).sum())
        return colors, failed

    def state_report(self) -> str:
        """Each change of the health state with its reasons, then what each state asks for,
        in full (a table would cut them)."""
        lines = ["health state changes (t: seconds from the start of the run):"]
        for row in self.states.itertuples(index=False):
            lines.append(f"  {f't{row.t:+.1f}s':<9} {row.color:<7} {row.reasons or '-'}")
        lines.append("what each state asks for (the runbook's action plan):")
        lines += [f"  {color:<7} {action}" for color, action in health.ACTIONS.items()]
        return "\n".join(lines)


def give_history(lab: Lab, rate_per_s: float, settings: SloSettings) -> float:
    """A fresh Prometheus holds seconds of data, so its 6h and 3d windows would hold only the
    incident, and the slow alerts would fire with the fast ones. Give it the past first:
    stop it, backfill the longest window of healthy traffic at the run's rate (promtool), start
    it again. Returns the seconds Prometheus took to come back."""
    longest = max(settings.seconds(w) for a in settings.alerts for w in (a.long, a.short))
    prom = lab.prometheus
    prom.stop()
    prom.write_history(rate_per_s, longest + 2 * settings.seconds("5m"))
    return lab.restart(prom.name)


def run_incident(lab: Lab, scenario: Scenario, *, history: bool = True,
                 **run_kw: Any) -> IncidentRun:
    """Replay `scenario` on a monitored lab, sampling the health state, then read back the
    pages and reconstruct the timeline from Prometheus, the webhook and the probe records.
    With `history`, Prometheus first gets a healthy past as long as its longest window."""
    prom = lab.prometheus
    settings = SloSettings.from_spec(lab.topology.prometheus)
    if history:
        give_history(lab, scenario.traffic.rate, settings)
    start = time.time()
    with HealthWatcher(prom, settings, path=lab.run_dir / "health-states.jsonl") as watcher:
        result = run_scenario(lab, scenario, **run_kw)
        time.sleep(settings.time_scale_s / 60 * 3)  # let the alerts resolve and be sent
    end = time.time()
    offset = float((result.records["wall"] - result.records["t"]).median())
    notes = read_notifications(lab.run_dir)
    notes = notes[(notes["received"] >= start) & (notes["received"] <= end)]
    timeline = incident.timeline_from_prometheus(
        prom, lab.run_dir, offset, end, result.records,
        thresholds=incident.thresholds_for(settings, lab.topology.api.db_pool_max))
    return IncidentRun(result, offset, end, watcher.changes(offset), notes, timeline, settings)
