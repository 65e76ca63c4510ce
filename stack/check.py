"""The exercise checker: run each task of a week on the learner's files, against a real lab or
the real tool, and say PASS or FAIL with what to try next.

    python -m stack.check week2                # the files in exercises/week2/<task>/
    python -m stack.check week2 --solutions    # exercises/solutions/week2/<task>/

Each task is one function registered with `@task(week, name, files)`. It gets the folder that
holds the learner's files and returns the detail of a PASS, or raises `ExerciseFailed` with
what went wrong and a hint. Every lab a check starts is a context manager: it is torn down
when the check ends, also when it fails. Traffic runs are kept under ten seconds.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import httpx
import yaml

from .errors import ConfigError, StackError, UnknownName

log = logging.getLogger(__name__)

WEEKS = ("week1", "week2", "week3", "week4")


@dataclass
class CheckResult:
    """One task's outcome: `week2/nginx: PASS (...)`, or FAIL with a hint."""

    task: str
    ok: bool
    detail: str
    hint: str = ""
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"{self.task}: {'PASS' if self.ok else 'FAIL'} ({self.detail})"]
        if not self.ok and self.hint:
            out.append(f"  try: {self.hint}")
        return out


class ExerciseFailed(StackError):
    """A learner's file did not pass its check; `hint` says what to try next."""

    def __init__(self, detail: str, hint: str = ""):
        super().__init__(detail)
        self.detail, self.hint = detail, hint


@dataclass(frozen=True)
class Task:
    week: str
    name: str
    files: tuple[str, ...]
    run: Callable[[Path], str]


TASKS: dict[str, dict[str, Task]] = {w: {} for w in WEEKS}


def task(week: str, name: str, files: tuple[str, ...]) -> Callable:
    def register(func: Callable[[Path], str]) -> Callable[[Path], str]:
        TASKS[week][name] = Task(week, name, files, func)
        return func
    return register


# -- the runner ---------------------------------------------------------------------------------
def task_dir(exercises_dir: Path, week: str, name: str, solutions: bool = False) -> Path:
    root = Path(exercises_dir) / "solutions" if solutions else Path(exercises_dir)
    return root / week / name


def run_task(t: Task, folder: Path) -> CheckResult:
    """Run one task's check; any error becomes a FAIL line, never a traceback."""
    label = f"{t.week}/{t.name}"
    t0 = time.monotonic()
    missing = [f for f in t.files if not (folder / f).is_file()]
    try:
        if missing:
            raise ExerciseFailed(f"{', '.join(missing)} not found in {folder}",
                                 f"copy the starter file(s) into {folder} and edit them")
        detail = t.run(folder)
        return CheckResult(label, True, detail, seconds=time.monotonic() - t0)
    except ExerciseFailed as exc:
        return CheckResult(label, False, exc.detail, exc.hint, time.monotonic() - t0)
    except StackError as exc:  # the lab or a tool, not the learner's file
        first = str(exc).splitlines()[0]
        return CheckResult(label, False, f"the check could not run: {first}",
                           "run `make setup`, then check again; `stackctl down` stops a lab "
                           "left running", time.monotonic() - t0)


def check(week: str, exercises_dir: Path = Path("exercises"), *, solutions: bool = False,
          tasks: list[str] | None = None, echo: bool = True) -> list[CheckResult]:
    """Check every task of `week` (or the named `tasks`), printing one line each."""
    if week not in TASKS:
        raise UnknownName("week", week, list(TASKS))
    known = TASKS[week]
    for name in tasks or []:
        if name not in known:
            raise UnknownName(f"{week} task", name, list(known))
    results = []
    for name, t in known.items():
        if tasks and name not in tasks:
            continue
        res = run_task(t, task_dir(exercises_dir, week, name, solutions))
        results.append(res)
        if echo:
            for line in res.lines():
                print(line, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("week", choices=WEEKS)
    parser.add_argument("tasks", nargs="*", help="only these tasks (default: every task)")
    parser.add_argument("--solutions", action="store_true",
                        help="check the solutions instead of your files")
    parser.add_argument("--exercises-dir", type=Path, default=_default_exercises_dir())
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the lab does")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        results = check(args.week, args.exercises_dir, solutions=args.solutions,
                        tasks=args.tasks)
    except StackError as exc:
        print(f"check: {exc}", file=sys.stderr)
        return 2
    return 0 if results and all(r.ok for r in results) else 1


def _default_exercises_dir() -> Path:
    from .lab import project_root

    root = project_root()
    return root / "exercises" if root and not Path("exercises").is_dir() else Path("exercises")


# -- helpers ------------------------------------------------------------------------------------
def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ExerciseFailed(f"{path.name}{where} is not valid YAML: "
                             f"{getattr(exc, 'problem', None) or exc}",
                             "fix the YAML syntax (indentation, a missing colon)") from None


def _mapping(path: Path) -> dict[str, Any]:
    data = _yaml(path)
    if not isinstance(data, dict):
        raise ExerciseFailed(f"{path.name} should be a mapping of keys to values",
                             "start from the starter file's layout")
    return data


def _module(path: Path) -> ModuleType:
    """Import a learner's Python file under a fresh name (a re-run sees their edits)."""
    name = f"_exercise_{path.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses and pickle look a module up by name
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ExerciseFailed(f"{path.name} does not import: {_one_line(exc)}",
                             "run `python " + str(path) + "` to see the full error") from None
    return mod


def _function(mod: ModuleType, name: str, path: Path) -> Callable:
    func = getattr(mod, name, None)
    if not callable(func):
        raise ExerciseFailed(f"{path.name} defines no function {name}()",
                             f"keep the starter's `def {name}(...)` and fill it in")
    return func


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _call(func: Callable, *args: Any, deadline_s: float, **kw: Any) -> tuple[bool, Any, float]:
    """Run learner code in a helper thread under a deadline: (finished, result or exception,
    seconds). A call that never returns is left behind on its daemon thread."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(func(*args, **kw))
        except BaseException as exc:  # the learner's bug is a result here
            box.append(exc)

    t0 = time.monotonic()
    worker = threading.Thread(target=run, name="exercise-call", daemon=True)
    worker.start()
    worker.join(deadline_s)
    took = time.monotonic() - t0
    return (bool(box), box[0] if box else None, took)


def _raised(outcome: Any, what: str) -> None:
    if isinstance(outcome, BaseException):
        tb = "".join(traceback.format_exception_only(type(outcome), outcome)).strip()
        last = tb.splitlines()[-1]
        raise ExerciseFailed(f"{what} raised {last[:160] + '...' if len(last) > 160 else last}",
                             "catch what can go wrong and report it instead of raising")


# =============================================================================================
# week 1: measure before you touch anything
# =============================================================================================
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
    from .report import _wall_offset, fault_damage
    from .runner import run_scenario
    from .scenario import Scenario

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
    offset = _wall_offset(res.records)
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
    from . import faults
    from .lab import Lab

    data = _mapping(folder / "diagnose.yaml")
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
    from . import faults
    from .lab import Lab
    from .report import fault_damage
    from .runner import run_scenario
    from .scenario import load_scenario

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


# =============================================================================================
# week 2: remove the single points of failure
# =============================================================================================
NGINX_KEYS = ("connect_timeout_s", "send_timeout_s", "read_timeout_s", "max_fails",
              "fail_timeout_s", "next_upstream_tries", "next_upstream_timeout_s", "keepalive")
NGINX_P99_MS = 2000.0
NGINX_MIN_READ_TIMEOUT_S = 0.5
CLIENT_TIMEOUT_S = 3.0


def _hang_under_traffic(lab: Any, target: str, *, at: float, hold: float, duration: float,
                        rate: float, name: str) -> Any:
    """SIGSTOP `target` from `at` to `at + hold` under POST /predict traffic with an
    Idempotency-Key per request; the load records."""
    from .analysis import load_records
    from .traffic import Traffic

    proc = lab.component(target).proc
    try:
        with Traffic(lab.public_url, lab.run_dir, rate=rate, duration=duration, name=name,
                     progress=False, idempotency_keys=True, timeout=CLIENT_TIMEOUT_S,
                     n_customers=lab.topology.postgres.n_customers) as traffic:
            while traffic.elapsed < at:
                time.sleep(0.02)
            proc.pause()
            while traffic.elapsed < at + hold:
                time.sleep(0.02)
            proc.resume()
            result = traffic.wait()
    finally:
        proc.resume()
    df = load_records(result.path)
    return df[df["kind"] == "load"]


@task("week2", "nginx", ("nginx.yaml",))
def check_nginx(folder: Path) -> str:
    from .analysis import latency_percentiles
    from .lab import Lab
    from .topology import AFTER

    data = _mapping(folder / "nginx.yaml")
    unknown = sorted(set(data) - set(NGINX_KEYS))
    if unknown:
        raise ExerciseFailed(f"nginx.yaml sets {', '.join(unknown)}, which this exercise does "
                             "not tune", f"use only: {', '.join(NGINX_KEYS)}")
    try:
        topo = AFTER.with_changes(name="week2-nginx",
                                  **{f"nginx.{k}": v for k, v in data.items()})
    except ConfigError as exc:
        raise ExerciseFailed(str(exc).replace("changes, ", "nginx.yaml, "),
                             "see the field's limits in stack/topology.py (NginxSpec)") from None
    spec = topo.nginx
    if spec.read_timeout_s < NGINX_MIN_READ_TIMEOUT_S:
        raise ExerciseFailed(f"read_timeout_s {spec.read_timeout_s:g} s would cut off healthy "
                             "requests that are merely slow (a cold cache, a busy database)",
                             f"keep read_timeout_s at {NGINX_MIN_READ_TIMEOUT_S:g} s or more")
    with Lab(topo) as lab:
        load = _hang_under_traffic(lab, "api2", at=1.5, hold=4.0, duration=7.0, rate=40.0,
                                   name="exercise-nginx")
    bad = load[(load["error"] != "") | ~load["status"].between(200, 299)]
    p99 = latency_percentiles(load, kind=None, ps=(99,))["p99"]
    how = bad["status"].astype(str).where(bad["status"] > 0, bad["error"]).value_counts()
    kinds = ", ".join(f"{n} {k}" for k, n in how.items())
    if len(bad):
        if how.get("timeout", 0) >= len(bad) / 2:
            hint = ("the client gives up after 3 s; nginx must give up on the hung replica "
                    "sooner (read_timeout_s) and retry on the other one")
        elif spec.next_upstream_tries == 1:
            hint = "next_upstream_tries 1 means one try and no retry: allow 2"
        else:
            hint = ("nginx answered with errors instead of retrying: check next_upstream_tries "
                    "and that next_upstream_timeout_s leaves time for a second try")
        raise ExerciseFailed(f"{len(bad)} failed of {len(load)} requests while api2 hung "
                             f"({kinds}); p99 {p99:.0f} ms", hint)
    if p99 > NGINX_P99_MS:
        raise ExerciseFailed(f"0 failed of {len(load)} requests while api2 hung, but p99 "
                             f"{p99:.0f} ms is over {NGINX_P99_MS:.0f} ms",
                             "every request sent to the hung replica waits read_timeout_s "
                             "before its retry: shorten it")
    return f"0 failed of {len(load)} requests while api2 hung; p99 {p99:.0f} ms"


READY_TIMEOUT_S = 1.0
READY_SLACK_S = 0.75


class _FakeModel:
    version = "v1"


def _ping_ok(timeout_s: float) -> None:
    return None


def _ping_refused(timeout_s: float) -> None:
    raise ConnectionRefusedError("connection to 127.0.0.1:5432 refused")


def _ping_hangs(timeout_s: float) -> None:
    time.sleep(30)  # a database that accepted the connection and then froze


def _readiness_case(func: Callable, label: str, model: Any, ping: Callable,
                    want_ready: bool, want_words: tuple[str, ...]) -> float:
    deadline = READY_TIMEOUT_S + READY_SLACK_S
    done, out, took = _call(func, model, ping, timeout_s=READY_TIMEOUT_S, deadline_s=deadline + 5)
    if not done or took > deadline:
        raise ExerciseFailed(f"{label}: readiness() took {took:.1f} s, more than "
                             f"timeout_s + {READY_SLACK_S:g} s",
                             "a frozen database never answers and never raises: run the ping "
                             "in a helper thread and stop waiting after timeout_s")
    _raised(out, f"{label}: readiness()")
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], list)):
        raise ExerciseFailed(f"{label}: readiness() returned {out!r}",
                             "return a tuple (ready: bool, reasons: list[str])")
    ready, reasons = out
    text = " ".join(map(str, reasons)).lower()
    if bool(ready) != want_ready:
        raise ExerciseFailed(f"{label}: readiness() said {'ready' if ready else 'not ready'} "
                             f"(reasons {reasons})",
                             "not ready when the model is missing or the database does not "
                             "answer; ready when both are fine" if want_ready is False else
                             "with a model and a database that answers, say ready")
    if want_ready and reasons:
        raise ExerciseFailed(f"{label}: ready, but with reasons {reasons}",
                             "a ready replica has no reasons")
    missing = [w for w in want_words if w not in text]
    if missing:
        raise ExerciseFailed(f"{label}: the reasons {reasons} do not mention "
                             f"{' and '.join(repr(w) for w in missing)}",
                             "give one reason per problem, naming it: 'model ...', "
                             "'database ...'")
    return took


@task("week2", "readiness", ("readiness.py",))
def check_readiness(folder: Path) -> str:
    import psycopg

    from . import faults
    from .lab import Lab
    from .postgres import API_ROLE

    path = folder / "readiness.py"
    func = _function(_module(path), "readiness", path)
    model = _FakeModel()
    cases = [
        ("model and database fine", model, _ping_ok, True, ()),
        ("model not loaded", None, _ping_ok, False, ("model",)),
        ("database refuses connections", model, _ping_refused, False, ("database",)),
        ("no model and no database", None, _ping_refused, False, ("model", "database")),
        ("database frozen", model, _ping_hangs, False, ("database",)),
    ]
    for case in cases:
        _readiness_case(func, *case)
    # the same function against a real Postgres: answering, then frozen by SIGSTOP (the hang
    # fault stops the postmaster and every backend). Each ping opens its own connection.
    with Lab("before") as lab:
        conninfo = lab.db.url_for(API_ROLE, connect_timeout=10)

        def ping(timeout_s: float) -> None:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute("SELECT 1").fetchone()

        _readiness_case(func, "live Postgres answering", model, ping, True, ())
        applied = faults.apply(lab, "hang", "postgres")
        try:
            took = _readiness_case(func, "live Postgres frozen (SIGSTOP)", model, ping,
                                   False, ("database",))
        finally:
            faults.undo(lab, applied)
    return (f"{len(cases)} cases right, and not ready {took:.2f} s after asking a frozen "
            "Postgres in a live lab")


# =============================================================================================
# week 3: monitoring that pages before users notice
# =============================================================================================
ALERT_NAME = "SLOErrorBudgetBurnFast"
# Hidden promtool cases, at the lab's scale (60 real seconds stand for one playbook hour, so
# the 1h window is 60s and the 5m window 5s), 10 requests per second on /predict.
CLEAN_S = 70


def _series_values(segments: list[tuple[float, int]], rps: float) -> tuple[str, str]:
    """promtool values of the 200 and 500 counters, sampled each second, for segments of
    (error share, seconds)."""
    from .slo import _series

    ok = [(round(rps * (1 - share), 9), n) for share, n in segments]
    err = [(round(rps * share, 9), n) for share, n in segments]
    return _series(ok), _series(err)


def _hidden_case(name: str, segments: list[tuple[float, int]], firing: dict[int, bool],
                 rps: float = 10.0) -> dict:
    ok, err = _series_values(segments, rps)
    sel = 'http_requests_total{route="/predict",method="POST",status="%s"}'
    expr = f'max(ALERTS{{alertname="{ALERT_NAME}",alertstate="firing",severity="page"}})'
    return {"name": name, "interval": "1s",
            "input_series": [{"series": sel % "200", "values": ok},
                             {"series": sel % "500", "values": err}],
            "promql_expr_test": [
                {"expr": expr, "eval_time": f"{at}s",
                 "exp_samples": [{"labels": "{}", "value": 1}] if fire else []}
                for at, fire in firing.items()]}


HIDDEN_ALERT_CASES = [
    # (what it proves, the hint when it fails, the case)
    ("a fast burn (15% errors) pages within 15 s (15 playbook minutes)",
     "the page must fire on a real, fast burn: the 1h window crosses 14.4x the budget after "
     "about 6 s of 15% errors; a long `for:` delays it",
     _hidden_case("fast burn", [(0, CLEAN_S), (0.15, 25)], {CLEAN_S + 15: True})),
    ("the page resolves within 15 s of the errors stopping",
     "a rule on the 1h window alone keeps paging for an hour after the fix: AND it with a "
     "short (5m) window",
     _hidden_case("resolves", [(0, CLEAN_S), (0.15, 20), (0, 20)], {CLEAN_S + 35: False})),
    ("a short blip (30% errors for 2 s) does not page",
     "a blip spends almost no budget: compare the 1h window against 14.4x the budget, not "
     "the 5m window against 1x",
     _hidden_case("blip", [(0, CLEAN_S), (0.3, 2), (0, 20)],
                  {CLEAN_S + t: False for t in (1, 2, 3, 4, 6, 10, 15)})),
    ("0.05% errors (half the budget rate) never page",
     "the SLO allows 0.1% errors: spending half of it must stay quiet",
     _hidden_case("half the budget", [(0.0005, CLEAN_S + 20)],
                  {CLEAN_S: False, CLEAN_S + 20: False}, rps=1000.0)),
    ("a sustained 3% error rate (30x) pages within 40 s",
     "the threshold is 14.4 x 0.001 = 1.44% errors over both windows; a higher one misses "
     "a burn that empties the month's budget in a day",
     _hidden_case("sustained 3%", [(0, CLEAN_S), (0.03, 40)], {CLEAN_S + 40: True})),
]


def _promtool(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    from . import binaries

    return subprocess.run([binaries.find("promtool"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _tool_output(res: subprocess.CompletedProcess, lines: int = 4) -> str:
    text = [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    return " | ".join(text[-lines:])


def _alert_tests_of(doc: Any) -> tuple[int, int]:
    """(cases expecting the alert to fire, cases expecting silence) in a promtool test file."""
    fire = quiet = 0
    for test in (doc or {}).get("tests") or []:
        for t in test.get("alert_rule_test") or []:
            if t.get("alertname") == ALERT_NAME:
                if t.get("exp_alerts"):
                    fire += 1
                else:
                    quiet += 1
    return fire, quiet


@task("week3", "alert", ("alert.rules.yml", "alert.test.yml"))
def check_alert(folder: Path) -> str:
    rules_doc = _yaml(folder / "alert.rules.yml")
    alerts = [r for g in (rules_doc or {}).get("groups") or [] for r in g.get("rules") or []
              if r.get("alert") == ALERT_NAME]
    if len(alerts) != 1 or (alerts[0].get("labels") or {}).get("severity") != "page":
        raise ExerciseFailed(f"alert.rules.yml needs one alert named {ALERT_NAME} with the "
                             f"label severity: page (found {len(alerts)})",
                             "keep the starter's alert name and labels, change its expr")
    with tempfile.TemporaryDirectory(prefix="exercise-alert-") as tmp:
        work = Path(tmp)
        shutil.copy2(folder / "alert.rules.yml", work / "alert.rules.yml")
        shutil.copy2(folder / "alert.test.yml", work / "alert.test.yml")
        res = _promtool("check", "rules", "alert.rules.yml", cwd=work)
        if res.returncode != 0:
            raise ExerciseFailed(f"promtool check rules: {_tool_output(res)}",
                                 "fix what promtool names: a PromQL syntax error or a bad key")
        failed = []
        for i, (claim, hint, case) in enumerate(HIDDEN_ALERT_CASES):
            doc = {"rule_files": ["alert.rules.yml"], "evaluation_interval": "1s",
                   "tests": [case]}
            (work / f"hidden_{i}.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
            # one promtool run per case, so that each failure is named
            res = _promtool("test", "rules", f"hidden_{i}.yml", cwd=work)
            if res.returncode != 0:
                failed.append((claim, hint))
        if failed:
            raise ExerciseFailed(f"{len(failed)} of {len(HIDDEN_ALERT_CASES)} hidden cases "
                                 "fail: " + "; ".join(claim for claim, _ in failed),
                                 failed[0][1])
        fire, quiet = _alert_tests_of(_yaml(work / "alert.test.yml"))
        res = _promtool("test", "rules", "alert.test.yml", cwd=work)
        if res.returncode != 0:
            raise ExerciseFailed(f"the hidden cases pass, but your own promtool tests fail: "
                                 f"{_tool_output(res, 6)}",
                                 "update the test's expectations (exp_labels and "
                                 "exp_annotations must match the alert exactly)")
        if not fire or not quiet:
            raise ExerciseFailed(f"the hidden cases pass, but alert.test.yml has {fire} case(s) "
                                 f"where {ALERT_NAME} must fire and {quiet} where it must stay "
                                 "quiet",
                                 "add a case of each: a real burn that pages, and a blip (or "
                                 "a low error rate) that does not")
    return (f"promtool: rules valid, your {fire + quiet} alert tests pass, and "
            f"{len(HIDDEN_ALERT_CASES)} hidden cases pass")


ROUTING_ALERTS = {
    # name: labels
    "page": {"alertname": "SLOErrorBudgetBurnFast", "severity": "page",
             "slo": "availability-99.9"},
    "ticket, same SLO": {"alertname": "SLOErrorBudgetBurnTicket", "severity": "ticket",
                         "slo": "availability-99.9"},
    "ticket, other SLO": {"alertname": "LatencyBudgetBurnTicket", "severity": "ticket",
                          "slo": "latency-p99"},
    "no severity": {"alertname": "ReplicaDown", "replica": "api2"},
}


def _amtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    from . import binaries

    return subprocess.run([binaries.find("amtool"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)


def _live_alerts(config_text: str, alerts: dict[str, dict[str, str]]) -> dict[str, dict]:
    """Start the real Alertmanager with this config, send the alerts, and return each one's
    receivers and state ('active' or 'suppressed') as Alertmanager reports them."""
    from . import ports
    from .alerting import Alertmanager
    from .lab import runs_root

    class LearnerAlertmanager(Alertmanager):
        def render(self) -> str:
            return config_text

    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="exercise-routing-", dir=root) as tmp:
        am = LearnerAlertmanager("alertmanager", Path(tmp), ports.free_port(),
                                 "http://127.0.0.1:9/unused")
        am.start()
        try:
            am.wait_ready()
            now = time.time()
            body = [{"labels": labels,
                     "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 5)),
                     "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 300))}
                    for labels in alerts.values()]
            httpx.post(am.url + "/api/v2/alerts", json=body, timeout=5).raise_for_status()
            found: dict[str, dict] = {}
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                got = httpx.get(am.url + "/api/v2/alerts", timeout=5).json()
                found = {}
                for a in got:
                    for key, labels in alerts.items():
                        if all(a["labels"].get(k) == v for k, v in labels.items()):
                            found[key] = {"receivers": sorted(r["name"] for r in a["receivers"]),
                                          "state": a["status"]["state"]}
                if len(found) == len(alerts) and all(f["state"] != "unprocessed"
                                                     for f in found.values()):
                    break
                time.sleep(0.1)
            return found
        finally:
            am.stop()


@task("week3", "routing", ("alertmanager.yml",))
def check_routing(folder: Path) -> str:
    path = folder / "alertmanager.yml"
    _mapping(path)
    res = _amtool("check-config", path.name, cwd=folder)
    if res.returncode != 0:
        raise ExerciseFailed(f"amtool check-config: {_tool_output(res)}",
                             "fix what amtool names (a receiver a route uses must be defined)")
    found = _live_alerts(path.read_text(), ROUTING_ALERTS)
    missing = [k for k in ROUTING_ALERTS if k not in found]
    if missing:
        raise ExerciseFailed(f"Alertmanager did not report the alert(s): {', '.join(missing)}",
                             "check the config loads: amtool check-config alertmanager.yml")
    page, same, other, plain = (found[k] for k in ROUTING_ALERTS)
    if page["receivers"] != ["pager"]:
        raise ExerciseFailed(f"the page went to {page['receivers']}, not only to pager",
                             "route severity=\"page\" to the receiver pager")
    for key, got in (("ticket, other SLO", other), ("no severity", plain)):
        if got["receivers"] != ["tickets"]:
            raise ExerciseFailed(f"the alert '{key}' went to {got['receivers']}, not to tickets",
                                 "pages wake a person: everything that is not severity=\"page\" "
                                 "goes to tickets (the default route)")
    if same["state"] != "suppressed":
        raise ExerciseFailed("the SLO's ticket still notifies while its page fires "
                             f"(state {same['state']})",
                             "add an inhibit rule: a firing page mutes the ticket of the same "
                             "slo (equal: [slo])")
    if other["state"] == "suppressed":
        raise ExerciseFailed("the latency SLO's ticket was muted by the availability page",
                             "the inhibit rule must compare the slo label (equal: [slo])")
    return ("amtool accepts it; in a live Alertmanager the page went to pager, tickets to "
            "tickets, and the SLO's ticket was muted while its page fired")


# =============================================================================================
# week 4: deploys that stop breaking prod
# =============================================================================================
SMOKE_BAD = ("tampered", "constant", "nan_scores", "shuffled_labels")
SMOKE_DEADLINE_S = 60.0
_smoke_cache: dict[str, Path] = {}


def _smoke_models() -> Path:
    """A model registry with the active model v1, a good candidate v2 (retrained with
    another seed) and the course's bad models; built once per process, copied per check."""
    import atexit

    from .lab import ensure_model
    from .model.train import train
    from .smoke import make_bad_model

    if "dir" not in _smoke_cache:
        root = Path(tempfile.mkdtemp(prefix="exercise-models-"))
        atexit.register(shutil.rmtree, root, True)
        models = root / "models"
        shutil.copytree(ensure_model(), models)
        for kind in SMOKE_BAD:  # made from v1, the newest model so far
            make_bad_model(models, kind)
        train(models, version="v2", seed=8)
        _smoke_cache["dir"] = models
    return _smoke_cache["dir"]


@task("week4", "smoke", ("smoke.py",))
def check_smoke(folder: Path) -> str:
    from .smoke import BAD_MODELS

    path = folder / "smoke.py"
    func = _function(_module(path), "smoke_test", path)
    source = _smoke_models()
    with tempfile.TemporaryDirectory(prefix="exercise-smoke-") as tmp:
        models = Path(tmp) / "models"
        shutil.copytree(source, models)
        verdicts: dict[str, bool] = {}
        for version in ["v2", *(f"bad-{k.replace('_', '-')}" for k in SMOKE_BAD)]:
            done, out, took = _call(func, models, version, "v1", deadline_s=SMOKE_DEADLINE_S)
            if not done:
                raise ExerciseFailed(f"smoke_test({version!r}) ran over {SMOKE_DEADLINE_S:g} s",
                                     "a smoke test gates every deploy: keep it to seconds")
            _raised(out, f"smoke_test({version!r})")
            if not hasattr(out, "passed") or not hasattr(out, "checks"):
                raise ExerciseFailed(f"smoke_test({version!r}) returned {type(out).__name__}, "
                                     "without .passed and .checks",
                                     "return the starter's SmokeReport")
            verdicts[version] = bool(out.passed)
    if not verdicts["v2"]:
        raise ExerciseFailed("the good candidate v2 (retrained with another seed, its ROC AUC "
                             "0.01-0.02 below v1's) was rejected",
                             "compare quality with a margin: a retrained model is never "
                             "exactly as good as the active one")
    let_through = [v for v, ok in verdicts.items() if ok and v != "v2"]
    if let_through:
        kinds = [v[4:].replace("-", "_") for v in let_through]
        what = "; ".join(f"{v}: {BAD_MODELS[k][0]}" for v, k in zip(let_through, kinds))
        raise ExerciseFailed(f"{len(let_through)} of {len(SMOKE_BAD)} bad models passed ({what})",
                             _SMOKE_HINTS[kinds[0]])
    return (f"v2 accepted; all {len(SMOKE_BAD)} bad models rejected "
            f"({', '.join(SMOKE_BAD)})")


_SMOKE_HINTS = {
    "tampered": "check the file's sha256 against the manifest before unpickling it "
                "(stack.model.registry.load_verified does) and report the failure",
    "constant": "score the held-out set (stack.smoke.holdout_set()) and reject scores that "
                "are all the same",
    "nan_scores": "score the whole held-out set and reject any score that is not finite",
    "shuffled_labels": "compare ROC AUC on the held-out set with the active model's and "
                       "reject a drop of more than 0.02",
}

ROLLOUT_DEADLINE_S = 40.0


@task("week4", "rollout", ("rollout.py",))
def check_rollout(folder: Path) -> str:
    from .analysis import load_records
    from .lab import Lab
    from .traffic import Traffic

    path = folder / "rollout.py"
    func = _function(_module(path), "restart_replicas", path)
    with Lab("after") as lab:
        before = {api.name: api.proc.pid for api in lab.apis}
        with Traffic(lab.public_url, lab.run_dir, rate=30, duration=ROLLOUT_DEADLINE_S,
                     name="exercise-rollout", progress=False, idempotency_keys=True,
                     timeout=CLIENT_TIMEOUT_S,
                     n_customers=lab.topology.postgres.n_customers) as traffic:
            while traffic.elapsed < 1.0:
                time.sleep(0.02)
            done, out, took = _call(func, lab, deadline_s=ROLLOUT_DEADLINE_S - 4)
            t_end = traffic.elapsed + 1.5
            while traffic.elapsed < t_end:
                time.sleep(0.02)
            result = traffic.stop()
        after = {api.name: api.proc.pid if api.proc else None for api in lab.apis}
        ready = {api.name: api.ready() for api in lab.apis}
        df = load_records(result.path)
    if not done:
        raise ExerciseFailed(f"restart_replicas() did not return within "
                             f"{ROLLOUT_DEADLINE_S - 4:g} s",
                             "wait for each replica with a deadline (lab.restart waits until "
                             "it is ready)")
    _raised(out, "restart_replicas()")
    same = [n for n in before if before[n] == after[n]]
    if same:
        raise ExerciseFailed(f"{', '.join(same)} still run(s) the old process (pid unchanged)",
                             "restart every replica in lab.apis")
    not_ready = [n for n, ok in ready.items() if not ok]
    if not_ready:
        raise ExerciseFailed(f"{', '.join(not_ready)} not ready after the restart",
                             "wait until each replica is ready before you move on")
    load = df[df["kind"] == "load"]
    bad = load[(load["error"] != "") | ~load["status"].between(200, 299)]
    if len(bad):
        how = bad["status"].astype(str).where(bad["status"] > 0, bad["error"]).value_counts()
        raise ExerciseFailed(f"{len(bad)} failed of {len(load)} requests during the restart "
                             f"({', '.join(f'{n} {k}' for k, n in how.items())})",
                             "restart one replica at a time, and only once the other serves: "
                             "take it out of nginx (set_backends_down), restart, wait until "
                             "ready, put it back")
    return (f"both replicas restarted in {took:.1f} s; 0 failed of {len(load)} requests")


if __name__ == "__main__":
    sys.exit(main())
