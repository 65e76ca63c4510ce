"""The exercise checks of week 1: measure before you touch anything."""
from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from stack.errors import ConfigError, ExerciseFailed
from stack.check.core import task, read_mapping

# The incident in exercises/week1/diagnose/evidence.md: api1 frozen (SIGSTOP) for 4 s. What it
# looked like from outside, measured with _replay on a BEFORE lab:
DIAGNOSE_HIDDEN = {"fault": "hang", "target": "api1", "params": {}}
DIAGNOSE_SIGNATURE = {"users_saw": "timeout", "alive": False}


class _Liveness:
    """GET /healthz every `interval_s` in a thread: was the process answering at all?"""

    def __init__(self, url: str, interval_s: float = 0.25, timeout_s: float = 1.0):
        self.url, self.interval_s, self.timeout_s = url, interval_s, timeout_s
        self.polls: list[tuple[float, bool]] = []  # (wall time sent, answered 200)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="liveness", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s, trust_env=False) as client:
            while not self._stop.is_set():
                sent = time.time()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.polls.append((sent, ok))
                self._stop.wait(self.interval_s)

    def answered(self, lo: float, hi: float) -> float | None:
        """Share of polls sent in [lo, hi] (wall time) that got a 200; None if none."""
        inside = [ok for t, ok in self.polls if lo <= t <= hi]
        return sum(inside) / len(inside) if inside else None

    def __enter__(self) -> "_Liveness":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout_s + 1)


def _replay(lab: Any, fault: str, target: str, params: dict[str, Any], *, at: float = 2.0,
            hold: float = 4.0, duration: float = 8.0, rate: float = 20.0) -> dict[str, Any]:
    """One fault under traffic on a BEFORE lab; what users saw, and whether the process
    answered /healthz while the fault was in force."""
    from stack.course.week1 import fault_damage, wall_offset
    from stack.lab.runner import run_scenario
    from stack.scenario import Scenario

    scenario = Scenario.model_validate({
        "name": f"replay-{fault}", "duration_s": duration, "on_call_response_s": hold,
        "traffic": {"rate": rate, "probe_interval_s": 0.5, "timeout_s": 3},
        "events": [{"at": at, "fault": fault, "target": target, "duration": hold,
                    "params": params}]})
    with _Liveness(lab.apis[0].url + "/healthz") as live:
        res = run_scenario(lab, scenario, name=f"replay-{fault}-{uuid.uuid4().hex[:4]}",
                           progress=False)
    damage = fault_damage(res, lab.run_dir).iloc[0].to_dict()
    window = res.faults[0]
    offset = wall_offset(res.records)
    # the first second after the fault is applied belongs to the fault (a signal takes effect
    # at once, a slow query only once the requests queue up)
    answered = live.answered(offset + window["start"] + 0.5, offset + window["end"])
    return {"users_saw": damage["users_saw"], "failed": int(damage["failed_requests"]),
            "alive": answered is not None and answered >= 0.5,
            "sentry_events": int(damage["sentry_events"]),
            "probe_down_s": float(damage["probe_down_s"]), "error": damage["error"],
            "requests": int(res.summary()["requests"])}


def _describe(sig: dict[str, Any]) -> str:
    saw = "no failed request" if sig["users_saw"] == "ok" else f"users saw {sig['users_saw']}"
    return f"{saw}, /healthz {'answered' if sig['alive'] else 'did not answer'}"


@task("week1", "diagnose", ("diagnose.yaml",))
def check_diagnose(folder: Path) -> str:
    from stack.lab import faults
    from stack.lab.lab import Lab

    data = read_mapping(folder / "diagnose.yaml")
    unknown = set(data) - {"fault", "target", "params"}
    if unknown:
        raise ExerciseFailed(f"diagnose.yaml has unknown key(s) {', '.join(sorted(unknown))}",
                             "keep only fault, target and params")
    name = str(data.get("fault") or "")
    if name not in faults.names():
        raise ExerciseFailed(f"fault '{name}' is not a fault the lab knows",
                             f"name one of: {', '.join(faults.names())} "
                             "(`stackctl fault --list` says what each does)")
    target = str(data.get("target") or "api1")
    if target not in ("api1", "api", "postgres"):
        raise ExerciseFailed(f"target '{target}' is not in the BEFORE lab",
                             "the BEFORE lab has api1 and postgres")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise ExerciseFailed("params should be a mapping, e.g. {delay_ms: 800}", "")
    with Lab("before") as lab:
        sig = _replay(lab, name, target, params)
    if sig["error"]:
        raise ExerciseFailed(f"the lab could not apply {name} on {target}: {sig['error']}",
                             "check the fault's target and params (`stackctl fault --list`)")
    want = DIAGNOSE_SIGNATURE
    if sig["failed"] == 0 or any(sig[k] != v for k, v in want.items()):
        hint = ("compare the kind of error users saw: a refused connection, a timeout and a "
                "500 each point to different faults")
        if sig["users_saw"] == want["users_saw"]:
            hint = ("the errors look alike; now ask whether the process itself still answered "
                    "(/healthz) during the incident")
        raise ExerciseFailed(f"replaying {name} on {target}: {_describe(sig)}, "
                             f"{sig['failed']} failed; the incident: {_describe(want)}", hint)
    return (f"{name} on {target} reproduces the incident: {_describe(sig)}, {sig['failed']} "
            f"of {sig['requests']} requests failed, {sig['sentry_events']} Sentry events")


SCENARIO_MIN_FAILED = 30
SCENARIO_MAX_DURATION_S = 12.0
SCENARIO_MAX_RATE = 40.0


@task("week1", "scenario", ("scenario.yaml",))
def check_scenario(folder: Path) -> str:
    from stack.lab import faults
    from stack.lab.lab import Lab
    from stack.course.week1 import fault_damage
    from stack.lab.runner import run_scenario
    from stack.scenario import load_scenario

    path = folder / "scenario.yaml"
    try:
        sc = load_scenario(path, known_faults=faults.names())
    except ConfigError as exc:
        raise ExerciseFailed(f"not a valid scenario: {exc}".replace(str(path), path.name),
                             "fix the line and field the message names; `stackctl fault "
                             "--list` names the faults") from None
    if sc.duration_s > SCENARIO_MAX_DURATION_S or sc.traffic.rate > SCENARIO_MAX_RATE:
        raise ExerciseFailed(f"duration_s {sc.duration_s:g} s at {sc.traffic.rate:g} req/s is "
                             f"more than the exercise allows ({SCENARIO_MAX_DURATION_S:g} s, "
                             f"{SCENARIO_MAX_RATE:g} req/s)",
                             "make the leak faster instead of the scenario longer")
    leaks = [ev for ev in sc.events if ev.fault == "memory_leak"]
    if len(sc.events) != 1 or not leaks or leaks[0].target != "api1":
        raise ExerciseFailed(f"{len(sc.events)} event(s): "
                             + (", ".join(f"{e.fault} on {e.target}" for e in sc.events) or
                                "none"),
                             "use exactly one event: the memory_leak fault on api1")
    with Lab("before") as lab:
        res = run_scenario(lab, sc, name="exercise-scenario", progress=False)
        damage = fault_damage(res, lab.run_dir).iloc[0].to_dict()
        kills_path = lab.run_dir / "oom-kills.jsonl"
        kills = ([json.loads(ln) for ln in kills_path.read_text().splitlines() if ln.strip()]
                 if kills_path.exists() else [])
    if damage["error"]:
        raise ExerciseFailed(f"the lab could not apply the fault: {damage['error']}",
                             "check the event's params against `stackctl fault --list`")
    failed = int(damage["failed_requests"])
    killed = [k for k in kills if k["component"] == "api1"]
    if not killed:
        raise ExerciseFailed(f"the memory limit never killed api1 ({failed} requests failed)",
                             "the leak must reach the 700 MB limit before the fault is undone: "
                             "raise params.mb_per_request, start it earlier, or hold it longer "
                             "(duration)")
    if failed < SCENARIO_MIN_FAILED:
        raise ExerciseFailed(f"api1 was killed at {killed[0]['rss_mb']:.0f} MB but only {failed} "
                             f"requests failed (need {SCENARIO_MIN_FAILED})",
                             "leave it down longer before the on-call restart (duration), or "
                             "send more requests (traffic.rate)")
    return (f"the memory limit killed api1 at {killed[0]['rss_mb']:.0f} MB; {failed} of "
            f"{res.summary()['requests']} requests failed ({damage['users_saw']})")
