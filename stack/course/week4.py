"""Week 4's closing: deploys under traffic, the BEFORE world's hand-made deploy for contrast,
a post-mortem filled from a measured incident, and the course's before/after summary."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from stack.analysis import records as analysis

from stack.lab import faults
from stack.lab.lab import Lab
from stack.lab.runner import ScenarioResult
from stack.lab.traffic import Traffic

MINUTES_PER_30D = 30 * 24 * 60


@dataclass
class ActionRun:
    """One action (a deploy, a restart, ...) in the middle of a steady traffic run."""

    name: str
    outcome: Any
    records: pd.DataFrame
    action_start_t: float
    action_end_t: float
    metrics_path: Path | None = None

    def versions_seen(self) -> pd.DataFrame:
        """From the replicas' /metrics, scraped every second: which model version each
        replica reported active (model_info == 1), first and last time seen."""
        from stack.lab.scrape import load_metrics

        m = load_metrics(self.metrics_path) if self.metrics_path else pd.DataFrame()
        if m.empty:
            return pd.DataFrame(columns=["replica", "version", "first_t", "last_t"])
        m = m[(m["name"] == "model_info") & (m["value"] == 1)]
        m = m.assign(version=m["labels"].map(lambda lab: lab.get("version")))
        return (m.groupby(["target", "version"])["t"].agg(["min", "max"]).reset_index()
                .rename(columns={"target": "replica", "min": "first_t", "max": "last_t"})
                .sort_values(["replica", "first_t"]).reset_index(drop=True))

    @property
    def load(self) -> pd.DataFrame:
        return self.records[self.records["kind"] == "load"]

    @property
    def requests(self) -> int:
        return len(self.load)

    @property
    def failures(self) -> pd.DataFrame:
        """The load requests that did not get a 2xx."""
        return self.load[self.load["status"] // 100 != 2]

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def client_note(self) -> str:
        """Why a verdict on this run proves nothing ("" when the load client kept up)."""
        return analysis.client_note(self.records)

    def line(self) -> str:
        bad = self.failures
        detail = f"{len(bad)} failed of {self.requests} requests"
        if len(bad):  # what the users saw, so that a failed run says why
            detail += ": " + _counts(bad["error"].value_counts().to_dict())
        return analysis.verdict(self.name, bad.empty, detail, inconclusive=self.client_note)


def under_traffic(lab: Lab, name: str, action: Callable[[], Any], *, requests: int = 2000,
                  rate: float = 100.0, at: float = 3.0, idempotency_keys: bool = True
                  ) -> ActionRun:
    """Steady open-loop traffic of at least `requests` requests; `action()` runs `at`
    seconds in. The run lasts until the requests are sent, and 2 s past the action."""
    from stack.lab.scrape import Scraper

    duration = max(requests / rate, at + 2.0)
    slug = name.replace(" ", "-")
    metrics_path = lab.run_dir / f"metrics-{slug}.jsonl"
    traffic = Traffic(lab.public_url, lab.run_dir, rate=rate, duration=duration + 0.5,
                      name=slug, progress=False, idempotency_keys=idempotency_keys,
                      n_customers=lab.topology.postgres.n_customers)
    scraper = Scraper(lambda: {a.name: a.url for a in lab.apis}, metrics_path,
                      clock=lambda: traffic.elapsed)
    with traffic, scraper:
        while traffic.elapsed < at:
            time.sleep(0.02)
        start = traffic.elapsed
        outcome = action()
        end = traffic.elapsed
        result = traffic.wait()
    return ActionRun(name, outcome, analysis.load_records(result.path), start, end,
                     metrics_path)


def handmade_bad_deploy(lab: Lab, *, duration: float = 16.0, at: float = 3.0,
                        on_call_s: float = 8.0, rate: float = 40.0) -> ActionRun:
    """The BEFORE world's deploy: a bad model file copied over the live one and the API
    restarted; the on-call engineer puts the old file back `on_call_s` later."""
    applied: dict[str, Any] = {}
    with Traffic(lab.public_url, lab.run_dir, rate=rate, duration=duration,
                 name="handmade-deploy", progress=False,
                 n_customers=lab.topology.postgres.n_customers) as traffic:
        while traffic.elapsed < at:
            time.sleep(0.02)
        start = traffic.elapsed
        applied["fault"] = faults.apply(lab, "bad_model", "api1")
        while traffic.elapsed < at + on_call_s:
            time.sleep(0.05)
        faults.undo(lab, applied["fault"])
        end = traffic.elapsed
        result = traffic.wait()
    return ActionRun("hand-made deploy of a bad model (BEFORE)", applied["fault"],
                     analysis.load_records(result.path), start, end)


def incident_facts(run: ActionRun, slo: float = 0.999, rate: float = 40.0) -> dict[str, Any]:
    """What a post-mortem needs from a measured incident: window, impact, budget used."""
    bad = run.failures.sort_values("t")
    first, last = (float(bad["t"].min()), float(bad["t"].max())) if len(bad) else (None, None)
    month_requests = rate * MINUTES_PER_30D * 60
    budget_requests = (1 - slo) * month_requests
    return {
        "requests": run.requests, "failed": len(bad),
        "first_failure_t": first, "last_failure_t": last,
        "duration_s": (last - first) if first is not None else 0.0,
        "budget_used": len(bad) / budget_requests,
        "budget_minutes": len(bad) / rate / 60,
        "errors": bad["error"].value_counts().to_dict(),
    }


def _counts(errors: dict[str, int]) -> str:
    return ", ".join(f"{kind or 'ok'}: {n}" for kind, n in errors.items())


def markdown_table(df: pd.DataFrame) -> str:
    cols = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) for v in row]) + " |")
    return "\n".join(lines)


def fill_postmortem(template: str | Path, run: ActionRun, facts: dict[str, Any]) -> str:
    """The post-mortem template, filled with what the lab measured."""
    t0 = run.action_start_t
    timeline = [
        "- t+0.0s: a new model file was copied over the live one and the API restarted",
    ]
    if facts["first_failure_t"] is not None:
        timeline += [
            f"- t+{facts['first_failure_t'] - t0:.1f}s: the first request failed "
            f"({_counts(facts['errors'])})",
            f"- t+{run.action_end_t - t0:.1f}s: the on-call engineer put the old file back "
            "and restarted the API",
            f"- t+{facts['last_failure_t'] - t0:.1f}s: the last request failed; service "
            "restored",
        ]
    values = {
        "title": "a hand-made model deploy took the API down",
        "summary": ("A model file was copied over the live one and the API restarted to load "
                    "it. The file was broken: the API refused it (its sha256 did not match the "
                    "manifest) and came up without a model, answering 503 to every "
                    "prediction until the old file was restored."),
        "duration": f"{facts['duration_s']:.1f} s of failed requests in the lab",
        "failed_requests": str(facts["failed"]), "requests": str(facts["requests"]),
        "failed_share": f"{facts['failed'] / max(facts['requests'], 1):.1%}",
        "budget_used": f"{facts['budget_used']:.2%}",
        "budget_minutes": f"{facts['budget_minutes']:.1f}",
        "noticed_by": "the uptime probe and users; nothing checked the model before it served",
        "timeline": "\n".join(timeline),
        "trigger": "a model file replaced by hand on the only API server, then a restart",
        "root_cause": ("deploys had no gate: no integrity check against a manifest before "
                       "serving, no smoke test, no second slot to fall back to, one replica"),
        "detection_gap": "nothing tested the candidate before it replaced the live model",
        "went_well": "- the integrity check refused the broken file instead of serving it",
        "actions": "\n".join([
            "| deploy models only through `stackctl deploy` (smoke tests, blue/green, all or "
            "none) | ML team | this week |",
            "| run two replicas behind nginx so a restart is never an outage | platform | "
            "this week |",
            "| page on SLO burn rate, not on single errors | on-call | next week |",
        ]),
    }
    text = Path(template).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return text + f"\n*Measured by the week 4 notebook on {stamp}.*\n"


def hard_numbers(before: ScenarioResult, after: ScenarioResult, deploys: dict[str, ActionRun]
                 ) -> pd.DataFrame:
    """The playbook's 'hard numbers', measured on the same scenario before and after: the
    availability over the week the replay stands for and its downtime per week and per 30
    days (the SLO's 99.9% allows 10.1 and 43.2 min), then the replay's own figures."""
    from stack.analysis.week import unexplained

    rows = {}
    for name, res in (("before", before), ("after", after)):
        s = res.summary()
        w = res.week()
        inc = analysis.incidents(res.records, kind="probe")
        rows[name] = {
            "availability over the week": f"{w.availability:.3%}",
            "downtime per week": f"{w.downtime_min_per_week:,.1f} min",
            "downtime per 30 days": f"{w.downtime_min_per_30d:,.0f} min",
            "availability in the replay (requests)": f"{s['availability']:.3%}",
            "availability in the replay (uptime probe)": f"{s['probe_availability']:.3%}",
            "p99 latency": f"{s['p99_ms']:.0f} ms",
            "incidents seen by the uptime probe": str(len(inc)),
            "failed requests": f"{s['failed']} of {s['requests']}",
            "failed requests outside every fault window":
                str(unexplained(res.explain_failures())),
        }
    for name, run in deploys.items():
        rows[name]["failed requests during a model deploy"] = f"{run.failed} of {run.requests}"
    return pd.DataFrame(rows)


def write_summary(path: str | Path, table: pd.DataFrame, figure: str, notes: list[str],
                  incidents: dict[str, pd.DataFrame] | None = None, slo: float = 0.999
                  ) -> Path:
    """reports/summary.md: the hard numbers, the figure, the notes, and per run (`incidents`,
    e.g. {"before": before.week().table()}) each incident's cost, detection and recovery."""
    path = Path(path)
    allowed_week, allowed_30d = (1 - slo) * 7 * 24 * 60, (1 - slo) * MINUTES_PER_30D
    lines = ["# The uptime playbook: before and after", "",
             "Measured by `make course` on this machine: the same production week of faults "
             "replayed against the BEFORE lab (one API process, one Postgres) and the AFTER lab "
             "(nginx, two replicas, Redis, Postgres primary with a synchronous standby), and a "
             "model deploy in each world.", "",
             "Availability is stated over the week the replay stands for: each incident's "
             "share of failed requests in the replay, times how long that incident lasts in a "
             "real week (its `real_duration` in the scenario), plus the failed share outside "
             f"the incidents over the rest of the week. The SLO, {slo:.1%}, allows "
             f"{allowed_week:.1f} min of downtime per week, {allowed_30d:.1f} min per 30 "
             "days. The replay's own availability, with a week's incidents packed into a "
             "minute or two, is beside it.", "", markdown_table(table), "",
             f"![before and after]({figure})", "", *[f"- {n}" for n in notes], ""]
    for name, frame in (incidents or {}).items():
        lines += [f"## Incidents, {name}", "", markdown_table(frame), ""]
    path.write_text("\n".join(lines))
    return path
