"""Replay a scenario against a running lab while traffic, the prober and the metrics scraper
run, and keep what happened: the records, the metrics, and when each fault was in force."""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from stack.analysis import records as analysis
from stack.analysis import week as week_analysis

from stack.lab import faults
from stack.errors import ConfigError, StackError
from stack.lab.lab import Lab
from stack.scenario import Scenario, load_scenario
from stack.lab.scrape import Scraper, load_metrics
from stack.lab.traffic import Traffic

log = logging.getLogger(__name__)


@dataclass
class ScenarioResult:
    """What a scenario run left behind, with the frames the notebooks analyse."""

    scenario: Scenario
    topology: str
    records_path: Path
    metrics_path: Path
    faults: list[dict[str, Any]] = field(default_factory=list)
    front: str = ""  # the component in front of the replicas ("nginx"), "" for none
    monitored: bool = False  # Prometheus and Alertmanager ran: pages were sent to a webhook
    stretched: list[str] = field(default_factory=list)  # windows lengthened to show healing

    @property
    def records(self) -> pd.DataFrame:
        return analysis.load_records(self.records_path)

    @property
    def metrics(self) -> pd.DataFrame:
        return load_metrics(self.metrics_path)

    def summary(self) -> dict[str, Any]:
        return analysis.summary(self.records)

    def windows(self) -> list[week_analysis.Window]:
        """Each fault's window in the replay with its incident's real duration."""
        events = self.scenario.events
        real = [self.scenario.real_duration_of(events[int(f.get("event", i))])
                for i, f in enumerate(self.faults)]
        return week_analysis.windows(self.faults, real)

    def page_times(self) -> list[float] | None:
        """Seconds after the start at which a page fired (the lab's webhook receiver's
        notifications, firing, severity page); None when no Prometheus ran."""
        if not self.monitored:
            return None
        from stack.analysis.notifications import read_notifications

        notes = read_notifications(self.records_path.parent)
        records = self.records
        if notes.empty or records.empty:
            return []
        offset = float((records["wall"] - records["t"]).median())
        fired = notes[(notes["severity"] == "page") & (notes["status"] == "firing")
                      & (notes["received"] >= offset)]
        return sorted(float(w - offset) for w in fired["received"])

    def week(self, pages: Sequence[float] | None = None, slo: float = 0.999,
             grace_s: float = week_analysis.GRACE_S) -> week_analysis.WeekFigures:
        """The replay's availability and the week's it stands for, with each incident's
        failures, real duration, time to detect and time to recover. `pages`: seconds after
        the start at which a page fired (default: the lab's own pages where Prometheus ran,
        None where it did not)."""
        if pages is None:
            pages = self.page_times()
        return week_analysis.week_figures(
            self.records, self.windows(), represents_s=self.scenario.represents, pages=pages,
            grace_s=grace_s, run_end=self.scenario.duration_s, slo=slo)

    def explain_failures(self, grace_s: float = week_analysis.GRACE_S) -> pd.DataFrame:
        """Every failed request by who answered, the fault window it fell in, error kind."""
        return week_analysis.explain_failures(self.records, self.windows(), front=self.front,
                                              grace_s=grace_s)

    @property
    def client_note(self) -> str:
        """Why a verdict on this run proves nothing ("" when the load client kept up)."""
        return analysis.client_note(self.records)

    def save(self, folder: str | Path) -> Path:
        """Copy what the run left behind into `folder` (it outlives the lab's run dir)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.records_path, folder / "records.jsonl")
        if self.metrics_path.exists():
            shutil.copy2(self.metrics_path, folder / "metrics.jsonl")
        from stack.analysis.notifications import NOTIFICATIONS

        pages = self.records_path.parent / "webhook" / NOTIFICATIONS
        if self.monitored and pages.exists():  # the pages go with the records they explain
            (folder / "webhook").mkdir(exist_ok=True)
            shutil.copy2(pages, folder / "webhook" / NOTIFICATIONS)
        meta = {"scenario": self.scenario.model_dump(), "topology": self.topology,
                "faults": self.faults, "front": self.front, "monitored": self.monitored,
                "stretched": self.stretched}
        (folder / "result.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "ScenarioResult":
        folder = Path(folder)
        meta = json.loads((folder / "result.json").read_text())
        return cls(Scenario.model_validate(meta["scenario"]), meta["topology"],
                   folder / "records.jsonl", folder / "metrics.jsonl", meta["faults"],
                   meta.get("front", ""), meta.get("monitored", False),
                   meta.get("stretched", []))

    def fault_spans(self) -> list[dict[str, Any]]:
        """{start, end, label} of each fault, for shading timelines."""
        return [{"start": f["start"], "end": f["end"], "label": f"{f['fault']} {f['target']}"}
                for f in self.faults]


def _actions(scenario: Scenario) -> list[tuple[float, int, str, int]]:
    """(time, order, 'apply'|'undo', event index), sorted; an undo at the same second as an
    apply goes first, and no fault outlives the scenario."""
    acts = []
    for i, ev in enumerate(scenario.events):
        acts.append((ev.at, 1, "apply", i))
        acts.append((min(scenario.end_of(ev), scenario.duration_s), 0, "undo", i))
    return sorted(acts)


def run_scenario(lab: Lab, scenario: Scenario | str | Path, *, name: str | None = None,
                 rate: float | None = None, progress: bool | None = None,
                 idempotency_keys: bool = False, probe_url: str | None = None
                 ) -> ScenarioResult:
    """Replay `scenario` against `lab` under open-loop traffic; always undoes every fault."""
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario, **faults.scenario_checks())
    for i, ev in enumerate(scenario.events):
        fault = faults.get(ev.fault)  # unknown names fail before any traffic starts
        lab.component(ev.target)
        try:
            fault.check_params(ev.params)
        except ConfigError as exc:
            raise ConfigError(exc.message, field=f"events.{i}.{exc.field}",
                              source=scenario.name) from None
    scenario, stretched = heal_windows(lab, scenario)
    for note in stretched:
        log.info("%s", note)
    name = name or f"{scenario.name}-{lab.topology.name}"
    spec = scenario.traffic
    traffic = Traffic(lab.public_url, lab.run_dir, rate=rate or spec.rate,
                      duration=scenario.duration_s, probe_interval=spec.probe_interval_s,
                      timeout=spec.timeout_s, name=name, progress=progress,
                      idempotency_keys=idempotency_keys, probe_url=probe_url,
                      n_customers=lab.topology.postgres.n_customers)
    metrics_path = lab.run_dir / f"metrics-{name}.jsonl"
    metrics_path.unlink(missing_ok=True)
    applied: dict[int, faults.Applied] = {}
    windows: dict[int, dict[str, Any]] = {}
    scraper = Scraper(lambda: {a.name: a.url for a in lab.apis}, metrics_path,
                      clock=lambda: traffic.elapsed)
    with traffic, scraper:
        try:
            for at, _, action, i in _actions(scenario):
                while (left := at - traffic.elapsed) > 0:  # read the clock once a turn
                    if traffic.finished:  # its clock stopped at its end, or earlier
                        if at >= scenario.duration_s - 0.01:  # an undo at the very end
                            break
                        traffic.wait()  # a failed client says why
                        raise StackError(f"the load client ended at t={traffic.elapsed:.1f} s, "
                                         f"before the scenario's {at:.1f} s")
                    time.sleep(min(0.05, left))
                ev = scenario.events[i]
                if action == "apply":
                    target = lab.resolve(ev.target)  # its window names the component
                    windows[i] = {"fault": ev.fault, "target": target, "event": i,
                                  "start": traffic.elapsed, "end": None, "error": ""}
                    try:
                        applied[i] = faults.apply(lab, ev.fault, target, **ev.params)
                    except StackError as exc:  # never in force: an empty window
                        windows[i]["error"] = str(exc)
                        windows[i]["end"] = windows[i]["start"]
                        log.warning("fault %s on %s failed: %s", ev.fault, target, exc)
                elif i in applied:
                    _undo(lab, applied.pop(i), windows[i], traffic)
            traffic.wait()
        finally:
            for i, app in list(applied.items()):  # a failed cell still puts the lab back
                _undo(lab, app, windows[i], traffic)
    spans = [w for _, w in sorted(windows.items())]
    for w in spans:
        w["end"] = w["end"] if w["end"] is not None else scenario.duration_s
    (lab.run_dir / f"faults-{name}.json").write_text(json.dumps(spans, indent=2))
    return ScenarioResult(scenario, lab.topology.name, traffic.path, metrics_path, spans,
                          "nginx" if lab.topology.nginx is not None else "",
                          lab.topology.prometheus is not None, stretched)


def heal_windows(lab: Lab, scenario: Scenario) -> tuple[Scenario, list[str]]:
    """`scenario` with every window the lab needs to show itself healing lengthened to that
    (a lost Patroni primary: its failover; a supervised crash: the restart), and what was
    changed. On a lab that heals nothing by itself (BEFORE) it is returned as it is."""
    needs = {}
    for i, ev in enumerate(scenario.events):
        need = faults.get(ev.fault).heal_window_s(lab, lab.resolve(ev.target))
        if need > 0:
            needs[i] = need
    return scenario.stretched(needs) if needs else (scenario, [])


def _undo(lab: Lab, app: faults.Applied, window: dict[str, Any], traffic: Traffic) -> None:
    try:
        faults.undo(lab, app)
    except StackError as exc:
        window["error"] = (window["error"] + "; " if window["error"] else "") + f"undo: {exc}"
        log.warning("undo of %s on %s failed: %s", app.fault, app.target, exc)
    window["end"] = traffic.elapsed
