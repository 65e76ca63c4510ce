"""For the whole of `make test` (tests/ and notebooks/): how pytest-xdist's two workers share
the work."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs on two xdist workers (--dist loadgroup). Every notebook cell goes to one
    group, so the four notebooks run whole and in order on one worker while the tests share
    the other; each test module is a group of its own, so its module-scoped lab starts once."""
    for item in items:
        path = Path(str(item.fspath))
        group = "notebooks" if path.suffix == ".ipynb" else path.stem
        item.add_marker(pytest.mark.xdist_group(group))
