"""The recorded incident of week 4's communication and post-mortem tasks: a real run, kept
under `exercises/week4/incident/`, and the facts the checkers measure from it.

The run was recorded once with `record()` (`python -m stack.check.incident OUT_DIR`): the
scenario `scenarios/bad_release.yaml` replayed on a monitored lab, exactly as week 3's
notebook does, with the health state sampled every second and the pages Alertmanager sent.
What the learner gets: the traffic and probe records, the health state changes, the pages,
the timeline rebuilt from Prometheus, and `run.json` (start time, SLO). What caused it stays
in the checker (`TRUTH`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from stack.errors import ExerciseFailed

# What the scenario did; not in the learner's files.
TRUTH = {
    "trigger": ("error_rate", "api1"),      # a release with a buggy code path on api1
    "contributing": ("hang", "api2"),       # api2 frozen: api1 took every request
}
RECORD_COLUMNS = ["kind", "t", "wall", "latency_s", "status", "error", "backend"]
TIME_TOLERANCE_S = 2.0     # a stated time within 2 s of the measured one is right
SHARE_TOLERANCE = 0.01     # a stated share within 1 percentage point (absolute) is right


def incident_dir() -> Path:
    """exercises/week4/incident/ of this checkout."""
    from stack.lab.lab import project_root

    root = project_root() or Path(__file__).resolve().parents[2]
    return Path(root) / "exercises" / "week4" / "incident"


# -- recording (once) -----------------------------------------------------------------------
def record(out: Path, scenario_file: str | Path | None = None) -> Path:
    """Replay bad_release on a monitored lab and write the learner's evidence to `out`."""
    from stack.course.week3 import run_incident
    from stack.lab import faults
    from stack.lab.lab import Lab, project_root
    from stack.scenario import load_scenario

    root = Path(project_root() or Path(__file__).resolve().parents[2])
    scenario = load_scenario(scenario_file or root / "scenarios" / "bad_release.yaml",
                             known_faults=faults.names())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with Lab("monitored") as lab:
        run = run_incident(lab, scenario, idempotency_keys=True)
    rec = run.result.records[RECORD_COLUMNS].copy()
    rec = rec.assign(t=rec["t"].round(3), wall=rec["wall"].round(3),
                     latency_s=rec["latency_s"].round(4))
    rec.to_csv(out / "records.csv", index=False)
    run.states.to_csv(out / "health_states.csv", index=False)
    run.pages().to_csv(out / "pages.csv", index=False)
    (out / "timeline.txt").write_text("\n".join(run.timeline) + "\n")
    (out / "run.json").write_text(json.dumps({
        "service": "the fraud-scoring API (POST /predict)",
        "start_wall": round(run.start_wall, 3),
        "start_utc": utc(run.start_wall),
        "duration_s": run.result.scenario.duration_s,
        "rate_per_s": run.result.scenario.traffic.rate,
        "slo_target": run.settings.target,
        "time_scale_s": run.settings.time_scale_s,
    }, indent=2) + "\n")
    return out


# -- the measured facts -----------------------------------------------------------------------
def utc(wall: float) -> str:
    return datetime.fromtimestamp(wall, timezone.utc).strftime("%H:%M:%S")


@dataclass(frozen=True)
class Measured:
    start_wall: float           # the run's t = 0
    first_failure_t: float
    last_failure_t: float
    failed: int                 # failed load requests in the whole run
    requests: int
    window_failed: int          # failed / requests sent between first and last failure
    window_requests: int
    component: str              # the replica that answered most failed requests
    page_fired_t: float | None
    page_resolved_t: float | None
    probe_failed: bool
    budget_used: float          # of the 30-day budget, at the lab's time scale

    @property
    def window_share(self) -> float:
        return self.window_failed / max(self.window_requests, 1)

    @property
    def run_share(self) -> float:
        return self.failed / max(self.requests, 1)

    def wall(self, t: float) -> float:
        return self.start_wall + t


def measure(folder: Path | None = None) -> Measured:
    """The facts of the recorded incident, from its records, pages and run.json."""
    folder = Path(folder or incident_dir())
    try:
        run = json.loads((folder / "run.json").read_text())
        rec = pd.read_csv(folder / "records.csv", keep_default_na=False)
        pages = pd.read_csv(folder / "pages.csv", keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise ExerciseFailed(f"the recorded incident in {folder} cannot be read: {exc}",
                             "restore exercises/week4/incident/ (git checkout -- "
                             "exercises/week4/incident)") from None
    load = rec[rec["kind"] == "load"]
    bad = load[(load["error"] != "") | (load["status"] // 100 != 2)]
    first, last = float(bad["t"].min()), float(bad["t"].max())
    window = load[(load["t"] >= first) & (load["t"] <= last)]
    answered = bad[bad["backend"] != ""]
    component = (str(answered["backend"].value_counts().index[0]) if len(answered)
                 else "")
    fired = pages[pages["status"] == "firing"]["t"]
    resolved = pages[pages["status"] == "resolved"]["t"]
    rate = len(load) / float(run["duration_s"])
    month_requests = rate * 30 * 24 * float(run["time_scale_s"])
    budget = len(bad) / ((1 - float(run["slo_target"])) * month_requests)
    probes = rec[rec["kind"] == "probe"]
    probe_failed = bool(((probes["error"] != "") | (probes["status"] // 100 != 2)).any())
    return Measured(float(run["start_wall"]), first, last, len(bad), len(load), len(bad),
                    len(window), component,
                    float(fired.min()) if len(fired) else None,
                    float(resolved.min()) if len(resolved) else None, probe_failed, budget)


# -- reading what the learner wrote ------------------------------------------------------------
TIME_RE = re.compile(r"\b(\d{1,2}):(\d{2}):(\d{2})\b")
T_RE = re.compile(r"\bt\s*\+\s*(\d+(?:\.\d+)?)\s*s\b")
PCT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*%")
PLACEHOLDER_RE = re.compile(r"<[^<>\n]{1,80}>")


def sections(text: str) -> dict[str, str]:
    """'## Name' sections of a Markdown file, by lower-cased name."""
    out: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        m = re.match(r"^##\s+(.+?)\s*$", line)
        if m:
            name = m.group(1).strip().lower()
            out[name] = ""
        elif name is not None:
            out[name] += line + "\n"
    return out


def strip_comments(text: str) -> str:
    """The Markdown without its <!-- comments --> (lines kept, so line numbers hold)."""
    return re.sub(r"<!--.*?-->", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.DOTALL)


def check_no_placeholders(text: str, file: str) -> None:
    left = [(n, m.group(0)) for n, line in enumerate(text.splitlines(), 1)
            for m in PLACEHOLDER_RE.finditer(line)]
    if left:
        n, first = left[0]
        raise ExerciseFailed(f"{file} still has {len(left)} placeholder(s) in angle brackets, "
                             f"the first {first} on line {n}",
                             "replace every <...> with what the recorded incident shows "
                             "(keep the words around them: the checker reads the values "
                             "after them)")


def labelled(text: str, label: str) -> str | None:
    """The rest of the first line that starts with `label` (case-insensitive, after an
    optional list dash or bold marks)."""
    pat = re.compile(r"^[\s>*-]*\**\s*" + re.escape(label) + r"\**\s*:?\**\s*(.*)$",
                     re.IGNORECASE | re.MULTILINE)
    m = pat.search(text)
    return m.group(1).strip() if m else None


def clock_times(text: str, day_of: float) -> list[float]:
    """Every HH:MM:SS in `text`, as wall times on the (UTC) day of `day_of`."""
    base = datetime.fromtimestamp(day_of, timezone.utc).replace(hour=0, minute=0, second=0,
                                                                microsecond=0).timestamp()
    out = []
    for h, m, s in TIME_RE.findall(text):
        wall = base + int(h) * 3600 + int(m) * 60 + int(s)
        if wall < day_of - 12 * 3600:  # past midnight
            wall += 24 * 3600
        out.append(wall)
    return out


def near(stated: float, measured: float, tol: float = TIME_TOLERANCE_S) -> bool:
    return abs(stated - measured) <= tol


if __name__ == "__main__":
    import sys

    print(record(Path(sys.argv[1] if len(sys.argv) > 1 else incident_dir())))
