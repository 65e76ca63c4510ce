"""For the whole of `make test` (tests/ and notebooks/): how pytest-xdist's two workers share
the work."""
from __future__ import annotations

from pathlib import Path

import pytest

# Modules whose tests each start a lab of their own (no module-scoped fixture) and take a minute
# or more: each test is a unit of work by itself, queued right after the notebooks, so the
# longest units start first and the two workers end together.
SPLIT_FIRST = ("test_scenarios_week", "test_exercises")


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs on two xdist workers (--dist loadgroup, --no-loadscope-reorder: units
    of work in the order of the items). Every notebook cell goes to one group, first, so the
    four notebooks run whole and in order on one worker while the tests share the other; each
    other test module is a group of its own (its module-scoped lab starts once)."""
    def group(item: pytest.Item) -> str:
        path = Path(str(item.fspath))
        if path.suffix == ".ipynb":
            return "notebooks"
        if path.stem in SPLIT_FIRST:
            return f"{path.stem}-{item.name}"
        return path.stem

    def rank(item: pytest.Item) -> int:
        path = Path(str(item.fspath))
        if path.suffix == ".ipynb":
            return 0
        return 1 + (SPLIT_FIRST.index(path.stem) if path.stem in SPLIT_FIRST
                    else len(SPLIT_FIRST))

    items.sort(key=rank)  # stable: each notebook's cells, each module's tests keep their order
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group(item)))
