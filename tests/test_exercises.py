"""The exercises: every solution passes its checker and every untouched starter fails it, on
real labs and with the real promtool and Alertmanager (stack.check starts and tears them down).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from stack import check as checker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXERCISES = Path(__file__).resolve().parent.parent / "exercises"
TASKS = [(week, name) for week, tasks in checker.TASKS.items() for name in tasks]


def test_every_week_has_two_tasks_or_more():
    for week in checker.WEEKS:
        assert len(checker.TASKS[week]) >= 2, week


@pytest.mark.parametrize("week,name", TASKS, ids=[f"{w}/{n}" for w, n in TASKS])
def test_starter_and_solution_have_the_same_files(week: str, name: str):
    t = checker.TASKS[week][name]
    starter = checker.task_dir(EXERCISES, week, name)
    solution = checker.task_dir(EXERCISES, week, name, solutions=True)
    assert (starter / "README.md").is_file()
    for f in t.files:
        assert (starter / f).is_file(), starter / f
        assert (solution / f).is_file(), solution / f
    assert sorted(p.name for p in solution.iterdir()) == sorted(t.files)


@pytest.mark.parametrize("week,name", TASKS, ids=[f"{w}/{n}" for w, n in TASKS])
def test_solution_passes(week: str, name: str, runs_root: Path, model_dir: Path):
    res = checker.run_task(checker.TASKS[week][name],
                           checker.task_dir(EXERCISES, week, name, solutions=True))
    assert res.ok, "\n".join(res.lines())
    assert res.lines()[0].startswith(f"{week}/{name}: PASS (")


@pytest.mark.parametrize("week,name", TASKS, ids=[f"{w}/{n}" for w, n in TASKS])
def test_untouched_starter_fails_with_a_hint(week: str, name: str, runs_root: Path,
                                             model_dir: Path):
    res = checker.run_task(checker.TASKS[week][name], checker.task_dir(EXERCISES, week, name))
    assert not res.ok, "\n".join(res.lines())
    # the learner's file is at fault, not the lab: the check ran and says what to try
    assert not res.detail.startswith("the check could not run"), res.detail
    lines = res.lines()
    assert lines[0].startswith(f"{week}/{name}: FAIL (") and lines[1].startswith("  try: ")


def test_main_exit_codes_and_lines(runs_root: Path, capsys: pytest.CaptureFixture[str]):
    """`python -m stack.check week3`: 1 and a FAIL line per starter, 0 for the solutions."""
    assert checker.main(["week3", "--exercises-dir", str(EXERCISES)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in out if not ln.startswith("  ")] == \
        ["week3/alert", "week3/routing"]
    assert all("FAIL (" in ln for ln in out if not ln.startswith("  "))
    assert checker.main(["week3", "--solutions", "--exercises-dir", str(EXERCISES)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(": PASS (" in ln for ln in out)


def test_a_missing_file_fails_without_a_lab(tmp_path: Path):
    res = checker.check("week2", tmp_path, tasks=["nginx"], echo=False)[0]
    assert not res.ok and "nginx.yaml not found" in res.detail and res.hint


def test_unknown_week_or_task_names_the_known_ones():
    with pytest.raises(checker.UnknownName, match="week1"):
        checker.check("week9")
    with pytest.raises(checker.UnknownName, match="nginx"):
        checker.check("week2", tasks=["nope"])
