"""Every week's notebook runs end to end under papermill with its CI defaults. (nbval, run by
the same pytest over notebooks/, replays the committed outputs and compares the verdicts.)"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from stack.course.run import notebooks

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("notebook", notebooks(ROOT), ids=lambda p: p.parent.name)
def test_notebook_runs_end_to_end(notebook: Path, tmp_path: Path, runs_root: Path):
    import nbformat
    import papermill

    t0 = time.monotonic()
    out = tmp_path / notebook.name
    # The notebooks write to the project's reports/ (ignored by git), as `make course` does:
    # weeks 2 and 4 reuse the runs weeks 1 and 2 saved there instead of replaying them.
    papermill.execute_notebook(str(notebook), str(out), cwd=str(notebook.parent),
                               kernel_name="python3", progress_bar=False)
    elapsed = time.monotonic() - t0
    print(f"{notebook.parent.name}: papermill end to end in {elapsed:.0f} s")
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "lab down: PASS" in text, "every notebook tears its lab down"


@pytest.mark.parametrize("notebook", notebooks(ROOT), ids=lambda p: p.parent.name)
def test_committed_notebook_shows_its_figures_and_no_frozen_widgets(notebook: Path):
    """Every figure output holds a picture (not only "<Figure size ...>"), and no progress
    widget is stored (it would show frozen at its first state)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    data = [o.get("data", {}) for o in outputs]
    figures = [d for d in data if str(d.get("text/plain", "")).startswith("<Figure")]
    assert all("image/png" in d for d in figures), "a figure is stored as text only"
    assert not any("application/vnd.jupyter.widget-view+json" in d for d in data)
    if "figure" in notebook.read_text():
        assert figures, "the notebook draws figures but stores none"
