"""The uptime dashboard: the same panels drawn with matplotlib from Prometheus range queries
(for the notebooks) and as importable Grafana JSON (dashboards/uptime.json).

Panels: traffic, errors by cause, p50/p99 latency, DB connections, replica health, error
budget left.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from stack.analysis.slo import SloSettings, record_name


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str  # Grafana legend format, e.g. "{{status}}"; label names in braces


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str  # Grafana unit id: reqps, percentunit, s, short
    targets: tuple[Target, ...]


def panels(s: SloSettings = SloSettings()) -> list[Panel]:
    w = s.duration("5m")
    return [
        Panel("Traffic (req/s)", "reqps", (
            Target(f"sum by (route) (rate(http_requests_total[{w}]))", "{{route}}"),)),
        Panel("Errors by cause", "reqps", (
            Target(f'sum by (status) (rate(http_requests_total{{route="{s.route}",'
                   f'status!~"2.."}}[{w}]))', "HTTP {{status}}"),
            Target(f'sum by (outcome) (rate(predictions_total{{outcome!="ok"}}[{w}]))',
                   "{{outcome}}"))),
        Panel("Latency p50 / p99", "s", (
            Target(record_name("p50", "5m"), "p50"),
            Target(record_name("p99", "5m"), "p99"))),
        Panel("DB connections", "short", (
            Target('sum by (state) (db_pool_connections)', "pool {{state}}"),
            Target('sum by (state) (pg_stat_activity_count{datname="fraud"})',
                   "postgres {{state}}"))),
        Panel("Replica health (up)", "short", (
            Target('up{job="api"}', "{{replica}}"),
            Target('min(probe_success{job="probe"})', "uptime probe"))),
        Panel("Error budget left (30d)", "percentunit", (
            Target("slo:error_budget_remaining:ratio30d", "budget left"),)),
    ]


class RangeQueryable(Protocol):
    def query_range(self, expr: str, start: float, end: float, step: float) -> pd.DataFrame: ...


def _legend(fmt: str, row: pd.Series) -> str:
    out = fmt
    for key, value in row.items():
        out = out.replace("{{" + str(key) + "}}", str(value))
    return out


def figure(prom: RangeQueryable, start: float, end: float, step: float = 1.0,
           s: SloSettings = SloSettings(), t0: float | None = None, *,
           path: str | Path | None = None):
    """All panels in one matplotlib Figure (saved to `path` if given, a picture in a
    notebook); x is seconds since t0 (default: start)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    from stack.analysis.plots import finish

    t0 = start if t0 is None else t0
    ps = panels(s)
    fig = Figure(figsize=(12, 9))
    axes = fig.subplots(3, 2, sharex=True)
    for ax, panel in zip(axes.flat, ps):
        for target in panel.targets:
            df = prom.query_range(target.expr, start, end, step)
            if df.empty:
                continue
            labels = [c for c in df.columns if c not in ("t", "value")]
            groups = df.groupby(labels, sort=True) if labels else [((), df)]
            for key, grp in groups:
                row = pd.Series(dict(zip(labels, key if isinstance(key, tuple) else (key,))))
                ax.plot(grp["t"] - t0, grp["value"], label=_legend(target.legend, row))
        ax.set_title(panel.title)
        if panel.unit == "percentunit":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        if ax.lines:
            ax.legend(fontsize="small", loc="best")
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("seconds")
    fig.tight_layout()
    return finish(fig, path)


def grafana_json(panels_: list[Panel], *, title: str, uid: str, refresh: str, time_from: str,
                 alerts_expr: str = 'ALERTS{alertstate="firing"}') -> dict:
    """Importable Grafana dashboard JSON for these panels; the data source is a variable, and
    firing alerts show as annotations."""
    ds = {"type": "prometheus", "uid": "${datasource}"}
    out_panels = []
    for i, panel in enumerate(panels_):
        out_panels.append({
            "id": i + 1, "type": "timeseries", "title": panel.title, "datasource": ds,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [{"refId": chr(ord("A") + j), "datasource": ds, "expr": t.expr,
                         "legendFormat": t.legend} for j, t in enumerate(panel.targets)],
        })
    return {
        "title": title,
        "uid": uid,
        "tags": ["uptime-playbook", "slo"],
        "timezone": "browser",
        "schemaVersion": 38,
        "version": 1,
        "editable": True,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0, "refresh": 1}]},
        "annotations": {"list": [{
            "name": "Alerts", "datasource": ds, "enable": True, "iconColor": "red",
            "expr": alerts_expr, "titleFormat": "{{alertname}}"}]},
        "panels": out_panels,
    }


def grafana_dashboard(s: SloSettings = SloSettings()) -> dict:
    """Importable Grafana dashboard JSON with the same PromQL as the lab's figure."""
    return grafana_json(panels(s), title="Uptime playbook: fraud-scoring API",
                        uid="uptime-playbook", refresh="5s", time_from="now-15m")


def dashboards_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "dashboards"


def render_grafana(s: SloSettings = SloSettings()) -> str:
    return json.dumps(grafana_dashboard(s), indent=2) + "\n"


def write_grafana(path: Path | None = None, s: SloSettings = SloSettings()) -> Path:
    path = Path(path) if path else dashboards_dir() / "uptime.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_grafana(s))
    return path


if __name__ == "__main__":  # pragma: no cover
    print(write_grafana())
