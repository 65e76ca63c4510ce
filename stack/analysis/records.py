"""Pure functions that turn traffic records into availability, latency and incident numbers.

A request is ok when it got a 2xx response (its `error` is ""); every other record, including
timeouts and client-side overload, counts as failed.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np
import pandas as pd

from stack.analysis.fields import LATE_S, RECORD_FIELDS, behind_note

log = logging.getLogger(__name__)

MINUTES_PER_30D = 30 * 24 * 60
_DTYPES = {"kind": "object", "t": "float64", "wall": "float64", "latency_s": "float64",
           "lag_s": "float64", "status": "int64", "error": "object", "backend": "object",
           "request_id": "object"}


class Incident(NamedTuple):
    """A window of failures: scheduled times of its first and last failure, and their count."""

    start_t: float
    end_t: float
    failed: int

    @property
    def duration_s(self) -> float:
        return self.end_t - self.start_t


def load_records(*paths: str | Path) -> pd.DataFrame:
    """Read JSON-lines record files into one frame (in file order); a torn last line from a
    crashed run is skipped with a warning. No records gives an empty frame with the columns."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("%s line %d: not a JSON record, skipped", path, lineno)
    return records_frame(rows)


def records_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A frame with exactly the record columns and dtypes from record dicts."""
    df = pd.DataFrame(list(rows), columns=list(RECORD_FIELDS))
    defaults = {"lag_s": 0.0, "status": 0, "error": "", "backend": "", "request_id": ""}
    df = df.fillna(defaults)
    return df.astype(_DTYPES)


def _ok(df: pd.DataFrame) -> pd.Series:
    return (df["error"] == "") & df["status"].between(200, 299)


def _of_kind(df: pd.DataFrame, kind: str | None) -> pd.DataFrame:
    return df if kind is None else df[df["kind"] == kind]


def availability(df: pd.DataFrame, kind: str = "load") -> float:
    """Fraction of `kind` requests that got a 2xx; nan when there are none."""
    sub = _of_kind(df, kind)
    return float(_ok(sub).mean()) if len(sub) else float("nan")


def downtime_minutes_per_30d(availability: float) -> float:
    """Minutes of downtime in 30 days at this availability: (1 - a) * 30 * 24 * 60."""
    return (1.0 - availability) * MINUTES_PER_30D


def latency_percentiles(df: pd.DataFrame, kind: str = "load", ps: Iterable[float] = (50, 95, 99),
                        ok_only: bool = False) -> dict[str, float]:
    """Latency percentiles in ms keyed "p50", "p99.9", ...; failures count by default (a
    timeout is latency a user felt). Client-overload records never left, so they are left out."""
    sub = _of_kind(df, kind)
    sub = sub[_ok(sub)] if ok_only else sub[sub["error"] != "client_overload"]
    values = sub["latency_s"].to_numpy() * 1000.0
    return {f"p{p:g}": float(np.percentile(values, p)) if len(values) else float("nan")
            for p in ps}


def summary(df: pd.DataFrame) -> dict[str, Any]:
    """The numbers a run is judged by: counts, availability (by requests and by probes), the
    downtime they imply per 30 days, load latency percentiles, failures by kind, backends."""
    load = _of_kind(df, "load")
    probes = _of_kind(df, "probe")
    ok = int(_ok(load).sum())
    avail, probe_avail = availability(df, "load"), availability(df, "probe")
    lat = latency_percentiles(df, "load")
    lag = load["lag_s"].to_numpy() * 1000.0
    return {
        "requests": len(load), "ok": ok, "failed": len(load) - ok,
        "availability": avail,
        "downtime_min_per_30d": downtime_minutes_per_30d(avail),
        "probes": len(probes), "probes_ok": int(_ok(probes).sum()),
        "probe_availability": probe_avail,
        "probe_downtime_min_per_30d": downtime_minutes_per_30d(probe_avail),
        **{f"{k}_ms": v for k, v in lat.items()},
        "lag_p99_ms": float(np.percentile(lag, 99)) if len(lag) else float("nan"),
        "failed_by_kind": {str(k): int(v) for k, v in
                           load.loc[~_ok(load), "error"].value_counts().items()},
        "by_backend": {str(k): int(v) for k, v in load["backend"].value_counts().items()},
    }


def timeline(df: pd.DataFrame, bin_s: float = 1.0, kind: str = "load",
             ok_only: bool = False) -> pd.DataFrame:
    """Per bin of scheduled time `t` (index: bin start, s): sent, ok, failed, p50_ms, p99_ms.
    Bins from 0 to the last record are all present; latency is nan where nothing was measured."""
    cols = ["sent", "ok", "failed", "p50_ms", "p99_ms"]
    sub = _of_kind(df, kind)
    if sub.empty:
        return pd.DataFrame(columns=cols, index=pd.Index([], name="t", dtype="float64"),
                            dtype="float64")
    bins = np.floor(sub["t"].to_numpy() / bin_s).astype(int)
    ok = _ok(sub).to_numpy()
    lat = sub["latency_s"].to_numpy() * 1000.0
    measured = (ok if ok_only else sub["error"].to_numpy() != "client_overload")
    frame = pd.DataFrame({"bin": bins, "ok": ok.astype(int), "lat": np.where(measured, lat,
                                                                               np.nan)})
    grouped = frame.groupby("bin")
    out = pd.DataFrame({
        "sent": grouped.size(),
        "ok": grouped["ok"].sum(),
        "p50_ms": grouped["lat"].quantile(0.5),
        "p99_ms": grouped["lat"].quantile(0.99),
    })
    out = out.reindex(range(0, int(bins.max()) + 1))
    out[["sent", "ok"]] = out[["sent", "ok"]].fillna(0).astype(int)
    out["failed"] = out["sent"] - out["ok"]
    out.index = pd.Index(out.index.to_numpy() * bin_s, name="t", dtype="float64")
    return out[cols]


def incidents(df: pd.DataFrame, kind: str = "probe", min_gap_s: float = 2.0) -> list[Incident]:
    """Windows of failures by scheduled time; failures less than `min_gap_s` apart fall in the
    same window. With probes every 1 s, one ok probe between two failures splits them."""
    sub = _of_kind(df, kind)
    times = np.sort(sub.loc[~_ok(sub), "t"].to_numpy())
    found: list[Incident] = []
    for t in times:
        if found and t - found[-1].end_t < min_gap_s:
            last = found[-1]
            found[-1] = Incident(last.start_t, float(t), last.failed + 1)
        else:
            found.append(Incident(float(t), float(t), 1))
    return found


def budget_used(df: pd.DataFrame, slo: float = 0.999, kind: str = "load") -> float:
    """Fraction of the run's error budget used: failed / ((1 - slo) * requests). Above 1.0
    the run broke the SLO; nan when there are no requests."""
    if not 0 < slo < 1:
        raise ValueError(f"slo must be between 0 and 1, got {slo}")
    return (1.0 - availability(df, kind)) / (1.0 - slo)


def errors_by_kind(df: pd.DataFrame) -> pd.DataFrame:
    """Failure counts: one row per error kind, a column per record kind (load, probe), most
    frequent first."""
    failed = df[~_ok(df)]
    table = pd.crosstab(failed["error"], failed["kind"]).reindex(
        columns=["load", "probe"], fill_value=0)
    table = table.loc[table.sum(axis=1).sort_values(ascending=False, kind="stable").index]
    table.index.name, table.columns.name = "error", None
    return table.astype(int)


def verdict(name: str, ok: bool, detail: str = "", inconclusive: str = "") -> str:
    """One stable line a notebook prints, like "deploy: PASS (0 failed of 1200 requests)".

    `inconclusive`, when not empty, says why the run proves nothing either way (the load
    client fell behind its schedule): the line is then INCONCLUSIVE with that reason."""
    if inconclusive:
        return f"{name}: INCONCLUSIVE ({inconclusive})"
    line = f"{name}: {'PASS' if ok else 'FAIL'}"
    return f"{line} ({detail})" if detail else line


def client_note(records: pd.DataFrame) -> str:
    """"" when the load client kept its schedule in these records, else why a verdict on them
    is INCONCLUSIVE (more than 1% of the load requests left late or not at all)."""
    load = records[records["kind"] == "load"]
    late = int(((load["lag_s"] >= LATE_S) | (load["error"] == "client_overload")).sum())
    return behind_note(late, len(load))
