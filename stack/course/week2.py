"""Week 2's experiments on the real AFTER lab: each breaks one thing under traffic and returns
what it measured (the notebooks print it, the tests assert it)."""
from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import pandas as pd
import psycopg

from stack.analysis import records as analysis

from stack.components.patroni import TTL_S as LEADER_TTL_S  # noqa: F401 (the notebook reads it)
from stack.components.patroni import patronictl
from stack.course import history
from stack.lab import faults
from stack.lab.lab import Lab
from stack.lab.traffic import Traffic

log = logging.getLogger(__name__)


def run_with_fault(lab: Lab, name: str, duration: float, at: float, fault, undo=None,
                    undo_at: float | None = None, rate: float = 40.0,
                    idempotency_keys: bool = True, url: str | None = None) -> pd.DataFrame:
    """Traffic for `duration` s; `fault()` at `at` s, `undo()` at `undo_at` s."""
    with Traffic(url or lab.public_url, lab.run_dir, rate=rate, duration=duration, name=name,
                 progress=False, idempotency_keys=idempotency_keys, timeout=5.0,
                 n_customers=lab.topology.postgres.n_customers) as traffic:
        while traffic.elapsed < at:
            time.sleep(0.02)
        fault()
        if undo is not None:
            while traffic.elapsed < (undo_at if undo_at is not None else duration - 1):
                time.sleep(0.02)
            undo()
        result = traffic.wait()
    return analysis.load_records(result.path)


def primary_failover(lab: Lab, *, rate: float = 40.0) -> dict[str, Any]:
    """Lose the primary's node twice under write load through nginx (Patroni promotes the
    replica after the leader key's TTL; the old node rejoins as a replica), sampling which
    node accepts writes: stack.course.history."""
    hist = history.run(lab, rate=rate)
    return {**hist.figures, "report": history.report(hist), "records": hist.records,
            "patronictl_list": patronictl(lab.component("postgres").conf_path, "list"),
            "patronictl_history": patronictl(lab.component("postgres").conf_path, "history")}


def _window(df: pd.DataFrame, start: float, end: float) -> pd.DataFrame:
    load = df[df["kind"] == "load"]
    return load[(load["t"] >= start) & (load["t"] < end)]


def redis_killed(lab: Lab, *, duration: float = 6.0, kill_at: float = 2.0,
                 rate: float = 40.0) -> dict[str, Any]:
    """SIGKILL Redis under traffic: the API bypasses the cache within its short timeout and
    reads features from Postgres instead of failing."""
    redis = lab.component("redis")
    df = run_with_fault(lab, "redis-killed", duration, kill_at,
                         lambda: redis.proc.record.send(signal.SIGKILL))
    after = _window(df, kill_at, duration)
    lab.restart("redis")
    return {"requests_after_kill": len(after),
            "failed_after_kill": int((after["status"] != 200).sum()),
            "p99_after_kill_ms": analysis.latency_percentiles(after, kind=None)["p99"]
            if len(after) else float("nan"),
            "records": df}


def _sync_names(lab: Lab, primary: str) -> str | None:
    try:
        with lab.component(primary).connect(dbname="postgres") as conn:
            conn.execute("SET statement_timeout = 500")
            return conn.execute("SHOW synchronous_standby_names").fetchone()[0]
    except psycopg.Error:
        return None


def sync_standby_lost(lab: Lab, *, duration: float = 8.0, kill_at: float = 2.0,
                      rate: float = 40.0, with_manager: bool = True) -> dict[str, Any]:
    """Lose the synchronous standby's node under write load. Each commit waits for the
    standby's confirmation, so writes stall, until Patroni (synchronous_mode, not strict) sees
    no standby streaming and drops the requirement: writes go on, with one copy.

    with_manager=False freezes the primary's Patroni agent for the run (SIGSTOP) to show the
    stall it prevents: every commit then waits until the API's statement_timeout cancels the
    wait. The standby's node comes back afterwards and Patroni makes it synchronous again."""
    nodes = [lab.component(n) for n in ("postgres", "standby")]
    primary = next(n for n in nodes if n.role == "primary")
    standby = next(n for n in nodes if n is not primary)
    if not with_manager:
        primary.proc.pause()
    killed: dict[str, float] = {}
    dropped: list[float] = []
    stop = threading.Event()

    def watch() -> None:  # when did the primary stop naming a synchronous standby?
        while not stop.wait(0.1):
            if "wall" in killed and not dropped and _sync_names(lab, primary.name) == "":
                dropped.append(time.time())

    def kill() -> None:
        killed["wall"] = time.time()
        applied["node_loss"] = faults.apply(lab, "node_loss", target=standby.name)

    applied: dict[str, Any] = {}
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        df = run_with_fault(lab, f"sync-standby-lost{'' if with_manager else '-unmanaged'}",
                            duration, kill_at, kill, rate=rate)
    except BaseException:
        if "node_loss" in applied:  # the run failed: still bring the standby's node back
            primary.proc.resume()
            faults.undo(lab, applied.pop("node_loss"))
        raise
    finally:
        stop.set()
        watcher.join(2)
        primary.proc.resume()
    load = df[df["kind"] == "load"]
    offset = float((load["wall"] - load["t"]).median())
    dropped_t = dropped[0] - offset if dropped else None
    stalled = _window(df, kill_at, dropped_t if dropped_t else duration)
    after = _window(df, (dropped_t or duration) + 0.5, duration)
    if "node_loss" in applied:
        faults.undo(lab, applied["node_loss"])  # back, and synchronous again
        standby.proc.wait_ready(lambda: standby.check("/sync"), standby.start_deadline_s)
    return {
        "with_manager": with_manager,
        "sync_dropped_after_s": (dropped_t - kill_at) if dropped_t else None,
        "failed": int((load["status"] != 200).sum()),
        "stalled_requests": len(stalled),
        "max_latency_while_stalled_ms": float(stalled["latency_s"].max() * 1000)
        if len(stalled) else float("nan"),
        "p99_after_drop_ms": analysis.latency_percentiles(after, kind=None)["p99"]
        if len(after) else float("nan"),
        "records": df,
    }
