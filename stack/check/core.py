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
import logging
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import yaml

from stack.errors import ExerciseFailed, StackError, UnknownName

log = logging.getLogger(__name__)

WEEKS = ("week1", "week2", "week3", "week4")
CLIENT_TIMEOUT_S = 3.0  # how long the checks' traffic waits for an answer


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
    from stack.lab.lab import project_root

    root = project_root()
    return root / "exercises" if root and not Path("exercises").is_dir() else Path("exercises")


# -- helpers ------------------------------------------------------------------------------------
def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ExerciseFailed(f"{path.name}{where} is not valid YAML: "
                             f"{getattr(exc, 'problem', None) or exc}",
                             "fix the YAML syntax (indentation, a missing colon)") from None


def read_mapping(path: Path) -> dict[str, Any]:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ExerciseFailed(f"{path.name} should be a mapping of keys to values",
                             "start from the starter file's layout")
    return data


def load_module(path: Path) -> ModuleType:
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


def get_function(mod: ModuleType, name: str, path: Path) -> Callable:
    func = getattr(mod, name, None)
    if not callable(func):
        raise ExerciseFailed(f"{path.name} defines no function {name}()",
                             f"keep the starter's `def {name}(...)` and fill it in")
    return func


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def call_with_deadline(func: Callable, *args: Any, deadline_s: float, **kw: Any) -> tuple[bool, Any, float]:
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


def expect_raised(outcome: Any, what: str) -> None:
    if isinstance(outcome, BaseException):
        tb = "".join(traceback.format_exception_only(type(outcome), outcome)).strip()
        last = tb.splitlines()[-1]
        raise ExerciseFailed(f"{what} raised {last[:160] + '...' if len(last) > 160 else last}",
                             "catch what can go wrong and report it instead of raising")
