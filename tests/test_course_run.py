"""`make course`'s runner without running a lab: the kernel it picks, the parameters each
notebook gets per profile, and the HTML page it writes beside each executed notebook."""
from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import nbformat
import pytest

from stack.course import run

ROOT = Path(__file__).resolve().parent.parent


def _png() -> str:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def test_html_holds_the_figures_inline(tmp_path: Path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("fig")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "image/png": _png(), "text/plain": "<Figure size 200x100 with 1 Axes>"}),
        nbformat.v4.new_output("stream", name="stdout", text="lab down: PASS\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Week 0"), cell]
    path = tmp_path / "week0.ipynb"
    nbformat.write(nb, path)
    html = run.write_html(path, tmp_path / "week0.html").read_text()
    assert re.search(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/]{100}', html)
    assert "lab down: PASS" in html and "Week 0" in html


def test_the_project_kernel_when_installed_else_python3_with_a_note():
    assert run.kernel_name({"python3", "uptime-playbook"}) == ("uptime-playbook", "")
    kernel, note = run.kernel_name({"python3"})
    assert kernel == "python3" and "uptime-playbook" in note and "make setup" in note


@pytest.mark.parametrize("nb", run.notebooks(ROOT), ids=lambda p: p.parent.name)
def test_notebooks_declare_the_project_kernel(nb: Path):
    spec = nbformat.read(nb, as_version=4).metadata.kernelspec
    assert (spec.name, spec.display_name) == (run.KERNEL, run.KERNEL_DISPLAY)


def test_ci_passes_no_parameter_and_workshop_only_what_each_notebook_takes():
    assert run.PROFILES["ci"] == {}  # the committed outputs were made with each cell's values
    workshop = run.PROFILES["workshop"]
    taken: set[str] = set()
    for nb in run.notebooks(ROOT):
        got = run.notebook_parameters(nb, workshop)
        assert got.items() <= workshop.items()
        assert {"time_scale", "traffic_rate"} <= set(got), nb
        taken |= set(got)
    assert taken == set(workshop), "a workshop parameter no notebook takes"


def test_param_overrides_read_python_literals():
    assert run._parse_param("traffic_rate=20") == ("traffic_rate", 20)
    assert run._parse_param("time_scale=2.5") == ("time_scale", 2.5)
    assert run._parse_param("traffic_rate=None") == ("traffic_rate", None)
    with pytest.raises(Exception, match="NAME=VALUE"):
        run._parse_param("20")


def test_traffic_rate_changes_only_the_scenarios_rate():
    from stack.scenario import load_scenario

    s = load_scenario(ROOT / "scenarios" / "production_week.yaml").scaled(0.6)
    assert s.at_rate(None) is s
    fast = s.at_rate(20)
    assert fast.traffic.rate == 20 and fast != s  # a saved run at another rate is not reused
    assert fast.model_dump() == {**s.model_dump(), "traffic": {**s.model_dump()["traffic"],
                                                                "rate": 20.0}}
