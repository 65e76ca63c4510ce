"""Week 4's closing: deploys under traffic, the BEFORE world's hand-made deploy for contrast,
a post-mortem filled from a measured incident, and the course's before/after summary."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from stack.analysis import records as analysis

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
                .round({"first_t": 1, "last_t": 1})
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


def blue_green_source() -> str:
    """The blue/green mechanics each replica runs, read from stack/api/state.py (not imported:
    the api layer belongs to the replica process): the playbook's ModelRegistry.update_model,
    split in two so that every replica can load before any of them switches."""
    import ast
    import textwrap

    import stack

    path = Path(stack.__file__).parent / "api" / "state.py"
    source = path.read_text()
    cls = next(n for n in ast.parse(source).body
               if isinstance(n, ast.ClassDef) and n.name == "ApiState")
    methods = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
    out = ["# stack/api/state.py, class ApiState: two slots (blue, green), one pointer",
           "# POST /admin/model/stage -> _stage; /activate and /rollback -> _point_at"]
    for name in ("_stage", "_point_at"):
        out.append(textwrap.dedent(ast.get_source_segment(source, methods[name],
                                                          padded=True)).rstrip())
    return "\n".join(out[:3] + [""] + out[3:])


def slots_table(lab: Lab) -> pd.DataFrame:
    """What each replica's two slots hold now, from GET /admin/model."""
    rows = {}
    for api in lab.apis:
        m = api.admin("GET", "/admin/model").json()
        rows[api.name] = {f"{slot} slot": f"{info['version'] or '-'} ({info['state']})"
                          for slot, info in m["slots"].items()}
    return pd.DataFrame(rows).T


FLAG_AT = 0.5  # a score at or above this sends the transaction to review (the course's rule)


@dataclass
class HandDeploy(ActionRun):
    """The BEFORE world's hand-made deploy, and what users got: every 200 answer's stored
    score beside the score the good model gives the same inputs."""

    scores: pd.DataFrame = field(default_factory=pd.DataFrame)  # t, served, good, wrong
    steps: list[tuple[float, str]] = field(default_factory=list)  # (t, what was done)

    @property
    def wrong(self) -> pd.DataFrame:
        """The answered predictions whose score is not the good model's."""
        return self.scores[self.scores["wrong"]] if len(self.scores) else self.scores

    def impact(self) -> dict[str, Any]:
        """What users got while the bad model served: answers, wrong scores, review flags."""
        sc = self.scores
        if sc.empty or not sc["wrong"].any():
            return {"answered": len(sc), "wrong": 0, "first_t": None, "last_t": None,
                    "during": 0, "flagged_good": 0, "flagged_served": 0, "missed": 0}
        first, last = float(self.wrong["t"].min()), float(self.wrong["t"].max())
        during = sc[(sc["t"] >= first) & (sc["t"] <= last)]
        good_flag, served_flag = during["good"] >= FLAG_AT, during["served"] >= FLAG_AT
        return {"answered": len(sc), "wrong": int(sc["wrong"].sum()),
                "first_t": first, "last_t": last, "during": len(during),
                "flagged_good": int(good_flag.sum()), "flagged_served": int(served_flag.sum()),
                "missed": int((good_flag & ~served_flag).sum())}

    def impact_line(self) -> str:
        i = self.impact()
        if not i["wrong"]:
            return f"0 of {i['answered']} answered predictions had a wrong score"
        return (f"{i['wrong']} of {i['during']} predictions answered while the bad model "
                f"served had another score than the good model's, every one a 200; it sent "
                f"{i['flagged_served']} transactions to review where the good model sent "
                f"{i['flagged_good']} (score >= {FLAG_AT:g})")


def _hand_copy(model_dir: Path, bad_file: Path, version: str) -> dict[str, bytes]:
    """What a hand deploy does to pass the integrity check: the new file copied over the live
    version's, and the manifest edited to match it (the new sha256, the old exported trees
    dropped so the API loads the copied file). Returns the original bytes to put back."""
    import hashlib
    import json
    import shutil

    manifest_path = model_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["models"][version]
    live = model_dir / entry["file"]
    backup = {"manifest.json": manifest_path.read_bytes(), entry["file"]: live.read_bytes()}
    shutil.copyfile(bad_file, live)
    entry["sha256"] = hashlib.sha256(live.read_bytes()).hexdigest()
    entry.pop("trees_file", None)
    entry.pop("trees_sha256", None)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return backup


def _put_back(model_dir: Path, backup: dict[str, bytes]) -> None:
    for name, data in backup.items():
        (model_dir / name).write_bytes(data)


def _scores(lab: Lab, records: pd.DataFrame, good: Any) -> pd.DataFrame:
    """Every answered load request's stored score, and the good model's score on its inputs
    (from the predictions table, which keeps each request's inputs)."""
    from stack.model.features import build_features

    load = records[(records["kind"] == "load") & (records["status"] == 200)]
    ids = [i for i in load["request_id"] if i]
    cols = ["t", "served", "good", "wrong"]
    if not ids:
        return pd.DataFrame(columns=cols)
    with lab.db.connect() as conn:
        rows = conn.execute("SELECT request_id::text, customer_id, inputs, score FROM "
                            "predictions WHERE request_id = ANY(%s::uuid[])", (ids,)).fetchall()
        customer_ids = sorted({r[1] for r in rows})
        cur = conn.execute("SELECT customer_id, home_country, account_age_days, avg_amount_30d, "
                           "txn_count_30d, chargebacks_1y FROM customers "
                           "WHERE customer_id = ANY(%s)", (customer_ids,))
        names = [d.name for d in cur.description]
        customers = {r[0]: dict(zip(names, r)) for r in cur.fetchall()}
    t_of = dict(zip(load["request_id"], load["t"]))
    out = []
    for request_id, customer_id, inputs, score in rows:
        expected = float(good.predict_score(build_features(inputs, customers[customer_id]))[0])
        out.append((float(t_of[request_id]), float(score), expected,
                    abs(float(score) - expected) > 1e-6))
    return pd.DataFrame(out, columns=cols).sort_values("t").reset_index(drop=True)


def handmade_bad_deploy(lab: Lab, bad_file: str | Path | None = None, *,
                        duration: float = 20.0, at: float = 3.0, on_call_s: float = 8.0,
                        rate: float = 40.0) -> HandDeploy:
    """The BEFORE world's deploy of the shuffled-labels model: its file copied over the live
    one, the manifest edited so the integrity check passes, the API restarted. It serves,
    silently: 200s with wrong scores. The on-call engineer puts the old file back `on_call_s`
    after the copy and restarts again. `bad_file` is the model file (default: made here, the
    same seed as week 4's `make_bad_model(..., "shuffled_labels")`)."""
    from stack.deploy.gate import make_bad_model
    from stack.model.registry import get_entry, load_verified

    api = lab.apis[0]
    model_dir = Path(api.settings["model_dir"])
    version = api.admin("GET", "/admin/model").json()["active_version"]
    good = load_verified(model_dir, version)
    if bad_file is None:
        bad_file = model_dir / get_entry(model_dir, make_bad_model(model_dir,
                                                                   "shuffled_labels")).file
    steps: list[tuple[float, str]] = []
    with Traffic(lab.public_url, lab.run_dir, rate=rate, duration=duration,
                 name="handmade-deploy", progress=False,
                 n_customers=lab.topology.postgres.n_customers) as traffic:
        while traffic.elapsed < at:
            time.sleep(0.02)
        start = traffic.elapsed
        backup = _hand_copy(model_dir, Path(bad_file), version)
        steps.append((traffic.elapsed, f"the shuffled-labels model's file was copied over "
                      f"{version}'s, its sha256 pasted into the manifest, and the API "
                      "restarted"))
        lab.restart(api.name)
        while traffic.elapsed < at + on_call_s:
            time.sleep(0.05)
        _put_back(model_dir, backup)
        steps.append((traffic.elapsed, "the on-call engineer put the old file and manifest "
                      "back and restarted the API"))
        lab.restart(api.name)
        end = traffic.elapsed
        result = traffic.wait()
    records = analysis.load_records(result.path)
    return HandDeploy("hand-made deploy of a bad model (BEFORE)", {"version": version},
                      records, start, end, scores=_scores(lab, records, good), steps=steps)


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


def postmortem_timeline(run: HandDeploy, facts: dict[str, Any]) -> list[str]:
    """What was done and what users got, in time order, relative to the copy (t+0)."""
    t0 = run.action_start_t
    events = [(t, text) for t, text in run.steps]
    bad = run.failures.sort_values("t")
    if len(bad):
        # failures come in bursts (each restart): one line per burst
        gap = bad["t"].diff().fillna(float("inf")) > 1.0
        for _, burst in bad.groupby(gap.cumsum()):
            events.append((float(burst["t"].min()),
                           f"{len(burst)} requests failed over "
                           f"{burst['t'].max() - burst['t'].min():.1f} s "
                           f"({_counts(burst['error'].value_counts().to_dict())})"))
    i = run.impact()
    if i["wrong"]:
        events.append((i["first_t"], f"the first answer with a wrong score (HTTP 200, "
                       f"model_version {run.outcome['version']})"))
        events.append((i["last_t"], f"the last answer with a wrong score: {i['wrong']} in "
                       "all"))
        after = run.scores[run.scores["t"] > i["last_t"]]
        if len(after):
            events.append((float(after["t"].min()), "the first answer from the good model "
                           "again"))
    events.sort(key=lambda e: e[0])
    return [f"- t+{t - t0:.1f}s: {text}" for t, text in events]


def fill_postmortem(template: str | Path, run: HandDeploy, facts: dict[str, Any]) -> str:
    """The post-mortem template, filled with what the lab measured."""
    i = run.impact()
    version = run.outcome["version"]
    wrong_s = (i["last_t"] - i["first_t"]) if i["wrong"] else 0.0
    values = {
        "title": "a hand-made model deploy served wrong fraud scores",
        "summary": (
            f"The model trained on shuffled labels (the one week 4's smoke tests rejected) was "
            f"copied by hand over the live model file of {version}. The API refuses a file "
            "whose sha256 does not match the manifest, so the manifest was edited to match "
            "it, and the API restarted. It loaded the file and answered every prediction "
            f"with 200 and model_version {version}, with scores from a model no better than "
            f"a coin: {run.impact_line()}. Nothing alerted. The two restarts of the only API "
            f"server failed {facts['failed']} requests."),
        "duration": (f"{wrong_s:.1f} s of wrong scores in the lab, plus the two restarts "
                     "(see the timeline)"),
        "failed_requests": str(facts["failed"]), "requests": str(facts["requests"]),
        "failed_share": f"{facts['failed'] / max(facts['requests'], 1):.1%}",
        "budget_used": f"{facts['budget_used']:.2%}",
        "budget_minutes": f"{facts['budget_minutes']:.2g}",
        "noticed_by": ("nobody: the uptime probe and the error metrics saw only the restarts; "
                       "a wrong score is a 200. The old file went back because the lab's "
                       "on-call engineer was told to; in production, chargebacks weeks later"),
        "timeline": "\n".join(postmortem_timeline(run, facts)),
        "trigger": "a model file copied by hand over the live one, then a restart",
        "root_cause": (
            "nothing compared the candidate with the live model before it served: the "
            "integrity check only proves that a file is the one the manifest names, and the "
            "same hand that copied the file edited the manifest; no smoke test on held-out "
            "data, no second slot to go back to in an instant, and one API server, so each "
            "restart was an outage"),
        "detection_gap": ("the monitoring watches errors and latency; nothing watches what "
                          "the model answers (the share of transactions sent to review, the "
                          "score distribution)"),
        "went_well": (
            "- every prediction was stored with its inputs and score, so the wrong answers "
            "could be found and re-scored afterwards (this post-mortem did)\n"
            "- putting the old file back was one copy and one restart"),
        "actions": "\n".join([
            "| deploy models only through `stackctl deploy` (smoke tests against the live "
            "model on held-out data, blue/green, all or none); the manifest written by the "
            "deploy alone | ML team | this week |",
            f"| re-score the {i['wrong']} predictions with wrong scores and review the "
            f"{i['missed']} transactions the bad model let through | ML team | this week |",
            "| alert when the share of transactions sent to review moves away from its usual "
            "level | on-call | next week |",
            "| run two replicas behind nginx so a restart is never an outage | platform | "
            "this week |",
        ]),
    }
    text = Path(template).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    impact_line = (f"- Wrong scores: {i['wrong']} of {i['during']} predictions answered "
                   f"while the bad model served (every one a 200); {i['flagged_served']} sent "
                   f"to review instead of {i['flagged_good']}, {i['missed']} that the good "
                   "model flags let through")
    lines = text.splitlines()
    at = next((n for n, line in enumerate(lines) if line.startswith("- Failed requests:")),
              None)
    if at is not None:
        lines.insert(at, impact_line)
        text = "\n".join(lines) + "\n"
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
