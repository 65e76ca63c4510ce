"""The exercise checker: `python -m stack.check weekN [task ...] [--solutions]`.

`core` holds the runner and the helpers; each week's module registers its tasks with `@task`.
"""
from stack.errors import UnknownName
from stack.check.core import (TASKS, WEEKS, CheckResult, ExerciseFailed, Task, check, main, run_task, task,
                   task_dir)
from stack.check import week1, week2, week3, week4  # noqa: E402,F401  (importing registers the tasks)

__all__ = ["TASKS", "WEEKS", "CheckResult", "ExerciseFailed", "Task", "UnknownName", "check",
           "main", "run_task", "task", "task_dir"]
