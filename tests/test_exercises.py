"""The exercises: every solution passes its checker and every untouched starter fails it, on
real labs and with the real promtool and Alertmanager (stack.check starts and tears them down).
The tasks that need neither a lab nor a tool (health, communicate, postmortem) run in the fast
suite, with the mistakes their checkers must catch.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stack import check as checker
from stack.check import incident

EXERCISES = Path(__file__).resolve().parent.parent / "exercises"
# tasks whose check starts no lab and runs no external tool
LIGHT = {("week3", "health"), ("week4", "communicate"), ("week4", "postmortem")}
HEAVY = [pytest.mark.integration, pytest.mark.slow]


def _params() -> list:
    return [pytest.param(week, name, id=f"{week}/{name}",
                         marks=[] if (week, name) in LIGHT else HEAVY)
            for week, tasks in checker.TASKS.items() for name in tasks]


def test_every_week_has_two_tasks_or_more():
    for week in checker.WEEKS:
        assert len(checker.TASKS[week]) >= 2, week
    assert LIGHT <= {(w, n) for w, tasks in checker.TASKS.items() for n in tasks}


@pytest.mark.parametrize("week,name", _params())
def test_starter_and_solution_have_the_same_files(week: str, name: str):
    t = checker.TASKS[week][name]
    starter = checker.task_dir(EXERCISES, week, name)
    solution = checker.task_dir(EXERCISES, week, name, solutions=True)
    assert (starter / "README.md").is_file()
    for f in t.files:
        assert (starter / f).is_file(), starter / f
        assert (solution / f).is_file(), solution / f
    assert sorted(p.name for p in solution.iterdir()) == sorted(t.files)


@pytest.mark.parametrize("week,name", _params())
def test_solution_passes(week: str, name: str, runs_root: Path, model_dir: Path):
    res = checker.run_task(checker.TASKS[week][name],
                           checker.task_dir(EXERCISES, week, name, solutions=True))
    assert res.ok, "\n".join(res.lines())
    assert res.lines()[0].startswith(f"{week}/{name}: PASS (")


@pytest.mark.parametrize("week,name", _params())
def test_untouched_starter_fails_with_a_hint(week: str, name: str, runs_root: Path,
                                             model_dir: Path):
    res = checker.run_task(checker.TASKS[week][name], checker.task_dir(EXERCISES, week, name))
    assert not res.ok, "\n".join(res.lines())
    # the learner's file is at fault, not the lab: the check ran and says what to try
    assert not res.detail.startswith("the check could not run"), res.detail
    lines = res.lines()
    assert lines[0].startswith(f"{week}/{name}: FAIL (") and lines[1].startswith("  try: ")


@pytest.mark.integration
@pytest.mark.slow
def test_main_exit_codes_and_lines(runs_root: Path, capsys: pytest.CaptureFixture[str]):
    """`python -m stack.check week3`: 1 and a FAIL line per starter, 0 for the solutions."""
    names = [f"week3/{n}" for n in checker.TASKS["week3"]]
    assert checker.main(["week3", "--exercises-dir", str(EXERCISES)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in out if not ln.startswith("  ")] == names
    assert "week3/health" in names
    assert all("FAIL (" in ln for ln in out if not ln.startswith("  "))
    assert checker.main(["week3", "--solutions", "--exercises-dir", str(EXERCISES)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(names) and all(": PASS (" in ln for ln in out)


def test_make_check_covers_every_task_of_the_week(capsys: pytest.CaptureFixture[str]):
    """`make check WEEK=4` runs `python -m stack.check week4`, which checks every registered
    task; here the light ones only, through the same entry point."""
    makefile = (EXERCISES.parent / "Makefile").read_text()
    assert "-m stack.check week$(WEEK)" in makefile
    assert checker.main(["week4", "communicate", "postmortem", "--solutions",
                         "--exercises-dir", str(EXERCISES)]) == 0
    assert [ln.split(":")[0] for ln in capsys.readouterr().out.splitlines()] == \
        ["week4/communicate", "week4/postmortem"]
    assert set(checker.TASKS["week4"]) >= {"smoke", "rollout", "communicate", "postmortem"}
    assert set(checker.TASKS["week3"]) >= {"alert", "routing", "health"}


def test_a_missing_file_fails_without_a_lab(tmp_path: Path):
    res = checker.check("week2", tmp_path, tasks=["nginx"], echo=False)[0]
    assert not res.ok and "nginx.yaml not found" in res.detail and res.hint


def test_unknown_week_or_task_names_the_known_ones():
    with pytest.raises(checker.UnknownName, match="week1"):
        checker.check("week9")
    with pytest.raises(checker.UnknownName, match="nginx"):
        checker.check("week2", tasks=["nope"])


# -- the recorded incident and the writing tasks' checks ----------------------------------------
def test_the_recorded_incident_is_a_real_run_with_the_facts_the_tasks_use():
    folder = EXERCISES / "week4" / "incident"
    run = json.loads((folder / "run.json").read_text())
    m = incident.measure(folder)
    assert m.requests == run["rate_per_s"] * run["duration_s"]  # every request recorded
    assert 0 < m.first_failure_t < m.page_fired_t < m.last_failure_t < m.page_resolved_t
    assert m.component == "api1" and not m.probe_failed
    assert 0.05 < m.window_share < 0.15  # the buggy code path failed about one in ten
    assert m.run_share == pytest.approx(m.failed / m.requests)
    # the checkers' hidden truth agrees with what the records show
    assert incident.TRUTH["trigger"][1] == m.component
    assert "api2 stopped answering" in (folder / "timeline.txt").read_text()


def _variant(tmp_path: Path, week: str, name: str, old: str, new: str) -> checker.CheckResult:
    t = checker.TASKS[week][name]
    (file,) = t.files
    text = (checker.task_dir(EXERCISES, week, name, solutions=True) / file).read_text()
    assert old in text, old
    (tmp_path / file).write_text(text.replace(old, new))
    return checker.run_task(t, tmp_path)


@pytest.mark.parametrize("old,new,detail", [
    ("9.5% of fraud", "3.7% of fraud", "status page: the share"),
    ("From 18:43:40", "From 18:43:27", "status page: no time within 2 s of the measured start"),
    ("some users were affected", "all users were affected", "all users"),
    ("retrying it usually worked", "retrying on api2 worked", "internal part(s) api2"),
    ("(88 of 929 requests)", "(88 of 2400 requests)", "88 of 2400 requests is not"),
    ("Component: api1", "Component: api2", "Component 'api2'"),
    ("18:43:51 the page fired;", "", "measured page"),
    ("Next update: none", "Next update: <when>", "placeholder"),
], ids=["share", "start", "all-users", "internal-name", "counts", "component", "no-page",
        "placeholder"])
def test_communicate_catches_a_wrong_fact(tmp_path: Path, old: str, new: str, detail: str):
    res = _variant(tmp_path, "week4", "communicate", old, new)
    assert not res.ok and detail in res.detail and res.hint, res.lines()


@pytest.mark.parametrize("old,new,detail", [
    ("- End: 18:44:03", "- End: 18:44:13", "End time"),
    ("88 of 2400", "88 of 929", "Failed requests says 88 of 929"),
    ("5.1% of the 30-day", "0.5% of the 30-day", "error budget"),
    ("- Detected by: the health state", "- Detected by: the uptime probe, then the health state",
     "uptime probe"),
    ("- 18:44:08 the fast-burn page resolved\n", "", "the page resolving"),
    ("- 18:43:40 the first failed", "- 18:44:20 the first failed", "time order"),
    ("- Root cause: api1's new code", "- Root cause: the database under api1's new code",
     "clear"),
    ("- Contributing: api2 was frozen", "- Contributing: nginx was set", "api2"),
], ids=["end", "counts", "budget", "probe", "no-resolution", "order", "database", "contributing"])
def test_postmortem_catches_a_wrong_fact(tmp_path: Path, old: str, new: str, detail: str):
    res = _variant(tmp_path, "week4", "postmortem", old, new)
    assert not res.ok and detail in res.detail and res.hint, res.lines()


def test_health_names_the_state_that_got_the_wrong_response(tmp_path: Path):
    res = _variant(tmp_path, "week3", "health", 'steps.append("wait_for_failover")',
                   'steps.append("promote_standby_by_hand")')
    assert not res.ok and "no database primary" in res.detail
    assert "two primaries" in res.hint
