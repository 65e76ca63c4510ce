"""The dashboard: Grafana JSON in sync with the panels, and the matplotlib figure."""
from __future__ import annotations

import json

import matplotlib
import pandas as pd

from stack.analysis.dashboards import dashboards_dir, figure, grafana_dashboard, panels, render_grafana

matplotlib.use("Agg")


def test_checked_in_grafana_json_is_in_sync():
    """Regenerate with `python -m stack.analysis.dashboards` when this fails."""
    assert (dashboards_dir() / "uptime.json").read_text() == render_grafana()


def test_grafana_json_is_importable_shape():
    d = json.loads(render_grafana())
    assert d["templating"]["list"][0]["type"] == "datasource"
    titles = [p["title"] for p in d["panels"]]
    assert titles == ["Traffic (req/s)", "Errors by cause", "Latency p50 / p99",
                      "DB connections", "Replica health (up)", "Error budget left (30d)"]
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "${datasource}"
        assert p["targets"] and all(t["expr"] for t in p["targets"])
    exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
    assert 'up{job="api"}' in exprs and "slo:latency_seconds:p99_rate5m" in exprs
    assert any("db_pool_connections" in e for e in exprs)
    assert any("pg_stat_activity_count" in e for e in exprs)
    assert grafana_dashboard() == d


def test_figure_has_every_panel():
    class FakeProm:
        def __init__(self):
            self.asked = []

        def query_range(self, expr, start, end, step):
            self.asked.append(expr)
            t = [start, start + 1, start + 2]
            if "by (status)" in expr:
                return pd.DataFrame({"t": t, "value": [0, 1, 2], "status": ["500"] * 3})
            if "probe_success" in expr:
                return pd.DataFrame({"t": pd.Series(dtype=float),
                                     "value": pd.Series(dtype=float)})
            return pd.DataFrame({"t": t, "value": [1.0, 2.0, 3.0]})

    prom = FakeProm()
    fig = figure(prom, 100.0, 102.0)
    try:
        assert len(fig.axes) == 6
        assert [a.get_title() for a in fig.axes] == [p.title for p in panels()]
        assert fig.axes[1].get_legend().get_texts()[0].get_text() == "HTTP 500"
        assert len(prom.asked) == sum(len(p.targets) for p in panels())
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
