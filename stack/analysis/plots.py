"""Figures of a traffic run: throughput and latency over time, before/after, availability.

Figures are built with `matplotlib.figure.Figure` (no pyplot state), so they work headless and
are not kept alive by pyplot. Such a Figure has no image formatter in Jupyter (a notebook would
store only "<Figure size ...>"), so `finish` registers a PNG one with IPython, where it runs:
every figure the package returns then shows as a picture, in JupyterLab and in the HTML.
"""
from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from stack.analysis.records import timeline

log = logging.getLogger(__name__)

Faults = Sequence[Mapping[str, object]]
OK_COLOR, FAIL_COLOR, FAULT_COLOR = "#4c9a5b", "#d62728", "#ff9f1c"
P50_COLOR, P99_COLOR = "#1f77b4", "#9467bd"
DPI = 110


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _show_as_png_in_ipython() -> None:
    """Register the PNG formatter for Figures with the running IPython (once; a no-op outside
    IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["image/png"].for_type(Figure, _png)


def finish(fig: Figure, path: str | Path | None = None) -> Figure:
    """Save the figure to `path` (if given) and make it show as a picture in a notebook."""
    _show_as_png_in_ipython()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        log.info("saved figure %s", path)
    return fig


def _draw_faults(axes: Sequence[Axes], faults: Faults | None) -> None:
    """Shade each fault's span on every axis, edge it with dashed lines and label it."""
    for fault in faults or ():
        start, end = float(fault["start"]), float(fault["end"])  # type: ignore[arg-type]
        for ax in axes:
            ax.axvspan(start, end, color=FAULT_COLOR, alpha=0.15, lw=0, zorder=3)
            for x in (start, end):
                ax.axvline(x, color=FAULT_COLOR, ls="--", lw=1, zorder=3)
            ax.text(start, 0.985, f"{fault.get('label', '')}", transform=ax.get_xaxis_transform(),
                    va="top", ha="left", fontsize=8, color="#7a4100", zorder=5, clip_on=True,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                          "alpha": 0.8})


def _plot_throughput(ax: Axes, tl: pd.DataFrame, bin_s: float) -> None:
    x = tl.index.to_numpy()
    ax.bar(x, tl["ok"] / bin_s, width=bin_s, align="edge", color=OK_COLOR, label="ok")
    ax.bar(x, tl["failed"] / bin_s, width=bin_s, align="edge", bottom=tl["ok"] / bin_s,
           color=FAIL_COLOR, label="failed")
    peak = float(tl["sent"].max() / bin_s) if len(tl) else 0.0
    ax.set_ylim(0, max(peak, 1.0) * 1.2)  # headroom for fault labels and probe ticks
    ax.set_ylabel("requests / s")


def _plot_probe_failures(ax: Axes, df: pd.DataFrame) -> None:
    probes = df[df["kind"] == "probe"]
    failed = probes[probes["error"] != ""]["t"].to_numpy()
    if len(failed):
        ax.plot(failed, np.full(len(failed), 0.88), "|", color=FAIL_COLOR, ms=9, mew=2,
                transform=ax.get_xaxis_transform(), label="probe failed", zorder=4)


def _plot_latency(ax: Axes, tl: pd.DataFrame, bin_s: float) -> None:
    x = tl.index.to_numpy() + bin_s / 2
    ax.plot(x, tl["p50_ms"], color=P50_COLOR, marker=".", ms=3, lw=1.2, label="p50")
    ax.plot(x, tl["p99_ms"], color=P99_COLOR, marker=".", ms=3, lw=1.2, label="p99")
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")


def _latency_limits(tls: Sequence[pd.DataFrame]) -> tuple[float, float] | None:
    values = np.concatenate([tl[["p50_ms", "p99_ms"]].to_numpy().ravel() for tl in tls])
    values = values[np.isfinite(values) & (values > 0)]
    if not len(values):
        return None
    return 10 ** math.floor(math.log10(values.min())), 10 ** math.ceil(math.log10(values.max()))


def _draw_run(axes: tuple[Axes, Axes], df: pd.DataFrame, faults: Faults | None,
              bin_s: float, duration: float | None) -> pd.DataFrame:
    tl = timeline(df, bin_s=bin_s)
    top, bottom = axes
    _plot_throughput(top, tl, bin_s)
    _plot_probe_failures(top, df)
    _plot_latency(bottom, tl, bin_s)
    _draw_faults(axes, faults)
    bottom.set_xlabel("time since start (s)")
    end = duration if duration is not None else (float(df["t"].max()) + bin_s if len(df) else 1)
    bottom.set_xlim(0, end)
    for ax in axes:
        ax.grid(True, alpha=0.3, lw=0.5)
    return tl


def timeline_figure(df: pd.DataFrame, faults: Faults | None = None, title: str = "", *,
                    bin_s: float = 1.0, path: str | Path | None = None) -> Figure:
    """Requests per second (ok vs failed, probe failures as red ticks) above p50/p99 latency
    on a log scale; each fault {"start", "end", "label"} is a shaded, labelled span."""
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1])
    tl = _draw_run((top, bottom), df, faults, bin_s, None)
    limits = _latency_limits([tl])
    if limits:
        bottom.set_ylim(*limits)
    for ax in (top, bottom):
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return finish(fig, path)


def compare_timelines(dfs: Mapping[str, pd.DataFrame],
                      faults: Faults | Mapping[str, Faults] | None = None, *,
                      bin_s: float = 1.0, path: str | Path | None = None,
                      availability: Mapping[str, tuple[float, float]] | None = None,
                      slo: float = 0.999) -> Figure:
    """One column per run (e.g. before/after), same x and y scales, so they compare at a glance.
    `faults` is one list for every run or a dict of lists by run name. `availability`, by run
    name: (over the week the replay stands for, in the replay); each column's title then
    states the week's figure beside the SLO (green when it meets it, red when not) and the
    replay's own."""
    if not dfs:
        raise ValueError("compare_timelines needs at least one run")
    names = list(dfs)
    fig = Figure(figsize=(5.5 * len(names), 5.5), layout="constrained")
    axes = fig.subplots(2, len(names), sharex=True, sharey="row", squeeze=False)
    duration = max((float(df["t"].max()) + bin_s for df in dfs.values() if len(df)), default=1.0)
    tls = []
    for col, name in enumerate(names):
        run_faults = faults.get(name) if isinstance(faults, Mapping) else faults
        tls.append(_draw_run((axes[0, col], axes[1, col]), dfs[name], run_faults, bin_s,
                             duration))
        if availability is not None and name in availability:
            week, replay = availability[name]
            axes[0, col].set_title(
                f"{name}: {week:.3%} over the week (SLO {slo:.1%})\n"
                f"{replay:.2%} in the replay", fontsize=10,
                color=OK_COLOR if week >= slo else FAIL_COLOR)
        else:
            axes[0, col].set_title(name)
        if col:
            axes[0, col].set_ylabel("")
            axes[1, col].set_ylabel("")
    limits = _latency_limits(tls)
    if limits:
        axes[1, 0].set_ylim(*limits)
    for ax in axes[:, -1]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1), fontsize=8, frameon=False)
    if availability:
        week_min = (1 - slo) * 7 * 24 * 60
        fig.suptitle(f"the SLO {slo:.1%} allows {week_min:.1f} min of downtime per week; "
                     "each replay packs a week's incidents into the time shown", fontsize=9)
    return finish(fig, path)


def availability_bars(results: Mapping[str, float], slo: float = 0.999, *, title: str = "",
                      path: str | Path | None = None) -> Figure:
    """One bar per run with its availability in %, green when it meets the SLO, red when not;
    the y axis is zoomed to the range where the difference shows."""
    names = list(results)
    values = np.array([results[n] for n in names], dtype=float) * 100
    target = slo * 100
    fig = Figure(figsize=(max(4.0, 1.3 * len(names) + 2), 4), layout="constrained")
    ax = fig.subplots()
    colors = [OK_COLOR if v >= target else FAIL_COLOR for v in values]
    bars = ax.bar(names, np.nan_to_num(values, nan=0.0), color=colors)
    finite = values[np.isfinite(values)]
    low = min([target, *finite]) if len(finite) else target
    floor = max(0.0, 100 - (100 - low) * 1.6)
    ax.set_ylim(floor, 100 + (100 - floor) * 0.08)
    ax.axhline(target, color="black", ls="--", lw=1, zorder=2)
    ax.text(1.01, target, f"SLO {target:g}%", transform=ax.get_yaxis_transform(), va="center",
            fontsize=8)
    for bar, v in zip(bars, values):
        y = min(max(v, floor), 100) if np.isfinite(v) else floor
        ax.annotate("no data" if not np.isfinite(v) else f"{v:.3f}%",
                    (bar.get_x() + bar.get_width() / 2, y), xytext=(0, 3),
                    textcoords="offset points", ha="center", fontsize=9, zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                          "alpha": 0.8})
    ax.set_ylabel("availability (%)")
    ax.grid(True, axis="y", alpha=0.3, lw=0.5)
    if title:
        ax.set_title(title)
    return finish(fig, path)
