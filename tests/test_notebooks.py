"""The committed notebooks: papermill's parameters cell, figures stored as pictures, no frozen
widgets. nbval, run by the same pytest over notebooks/, executes each notebook once end to end
and compares its verdict lines with the committed ones (`make test` runs no notebook twice)."""
from __future__ import annotations

from pathlib import Path

import pytest

from stack.course.run import notebooks

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("notebook", notebooks(ROOT), ids=lambda p: p.parent.name)
def test_notebook_takes_papermill_parameters_and_tears_its_lab_down(notebook: Path):
    """What papermill needs (`make course` and `make notebooks` run them with it): one cell
    tagged `parameters`, first among the code cells. Each notebook's last verdict says its lab
    is down; nbval, which executes every notebook once in this same pytest run, compares it."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0]
    compared = [c for c in code if "nbval-ignore-output" not in c.metadata.get("tags", [])]
    text = "".join(o.get("text", "") for c in compared for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    assert "lab down: PASS" in text, "every notebook tears its lab down, in a compared cell"


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
