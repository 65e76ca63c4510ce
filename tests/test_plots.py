"""Figures build from synthetic records and save as PNG."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from stack.analysis.records import records_frame  # noqa: E402
from stack.analysis.plots import availability_bars, compare_timelines, timeline_figure  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def synthetic_run(outage: tuple[float, float] | None = (20.0, 28.0), seed: int = 0,
                  duration: float = 60.0, rate: float = 50.0) -> pd.DataFrame:
    """Load at `rate`/s and probes every second; during `outage`, timeouts and 503s."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(int(duration * rate)):
        t = i / rate
        down = outage is not None and outage[0] <= t < outage[1]
        error = ("timeout" if i % 2 else "http_5xx") if down else ""
        latency = 5.0 if error == "timeout" else float(rng.lognormal(np.log(0.02), 0.4))
        rows.append({"kind": "load", "t": t, "wall": 1.7e9 + t, "latency_s": latency,
                     "lag_s": 0.0, "status": 503 if error == "http_5xx" else (0 if error else 200),
                     "error": error, "backend": f"b{i % 2}", "request_id": ""})
    for i in range(int(duration)):
        down = outage is not None and outage[0] <= i < outage[1]
        rows.append({"kind": "probe", "t": float(i), "wall": 1.7e9 + i, "latency_s": 0.002,
                     "lag_s": 0.0, "status": 0 if down else 200,
                     "error": "connect" if down else "", "backend": "", "request_id": ""})
    return records_frame(rows)


FAULTS = [{"start": 20.0, "end": 28.0, "label": "kill replica b1"}]


def test_timeline_figure_saves_png(tmp_path):
    path = tmp_path / "figs" / "timeline.png"
    fig = timeline_figure(synthetic_run(), faults=FAULTS, title="kill a replica", path=path)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert path.read_bytes()[:8] == PNG
    assert fig.axes[1].get_yscale() == "log"


def test_timeline_figure_without_faults_or_failures():
    fig = timeline_figure(synthetic_run(outage=None, duration=5))
    assert len(fig.axes) == 2


def test_timeline_figure_empty_records():
    fig = timeline_figure(records_frame([]))
    assert len(fig.axes) == 2


def test_compare_timelines_share_scales(tmp_path):
    path = tmp_path / "compare.png"
    fig = compare_timelines({"before": synthetic_run(), "after": synthetic_run(outage=None)},
                            faults={"before": FAULTS, "after": FAULTS}, path=path)
    assert path.read_bytes()[:8] == PNG
    axes = fig.axes
    assert len(axes) == 4
    assert axes[0].get_ylim() == axes[1].get_ylim()  # throughput row
    assert axes[2].get_ylim() == axes[3].get_ylim()  # latency row


def test_compare_timelines_state_the_week_beside_the_slo_and_the_replay():
    fig = compare_timelines({"before": synthetic_run(), "after": synthetic_run(outage=None)},
                            faults=FAULTS, availability={"before": (0.9812, 0.8667),
                                                         "after": (0.99995, 1.0)})
    before, after = fig.axes[0].get_title(), fig.axes[1].get_title()
    assert before == "before: 98.120% over the week (SLO 99.9%)\n86.67% in the replay"
    assert after.startswith("after: 99.995% over the week")
    assert fig.axes[0].title.get_color() != fig.axes[1].title.get_color()
    assert "10.1 min of downtime per week" in fig.get_suptitle()


def test_compare_timelines_needs_a_run():
    with pytest.raises(ValueError):
        compare_timelines({})


def test_availability_bars(tmp_path):
    path = tmp_path / "bars.png"
    fig = availability_bars({"week 1": 0.9871, "week 2": 0.9985, "week 4": 0.99962,
                             "no data": float("nan")}, slo=0.999, title="availability",
                            path=path)
    assert path.read_bytes()[:8] == PNG
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert low < 98.71 and high > 100


def test_a_returned_figure_shows_as_a_png_in_ipython():
    """Without pyplot a Figure has no image formatter; the package registers one."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        fig = timeline_figure(synthetic_run(), faults=FAULTS, title="run")
        data, _ = shell.display_formatter.format(fig)
        assert data["image/png"].startswith(PNG)
    finally:
        InteractiveShell.clear_instance()
