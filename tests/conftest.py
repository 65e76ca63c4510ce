"""Shared fixtures: every lab a test starts lives under the test's tmp folder's runs root and is
torn down, also when the test fails."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs root that the Postgres user can enter (tmp_path's parents are private to root)."""
    root = Path("/tmp") / f"uptime-lab-tests-{os.getpid()}"
    root.mkdir(mode=0o755, exist_ok=True)
    root.chmod(0o755)
    os.environ["STACK_RUNS_DIR"] = str(root)
    yield root
    import shutil

    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's trained model (`make setup` trains it; trained here if missing)."""
    from stack.lab.lab import ensure_model

    return ensure_model()


@pytest.fixture(scope="session")
def before_lab(runs_root: Path, model_dir: Path):
    """One BEFORE lab shared by the read-only integration tests."""
    from stack.lab.lab import Lab

    lab = Lab("before", runs_root / "shared-before", model_dir=model_dir)
    with lab:
        yield lab


class _UnpickleMarker:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.fixture
def unpickle_marker(tmp_path: Path):
    """(an object whose unpickling creates a file, that file's path)."""
    marker = tmp_path / "unpickled.marker"
    return _UnpickleMarker(marker), marker
