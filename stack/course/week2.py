"""Week 2's experiments on the real AFTER lab: each breaks one thing under traffic and returns
what it measured (the notebooks print it, the tests assert it)."""
from __future__ import annotations

import logging
import signal
import time
from typing import Any

import pandas as pd

from stack.analysis import records as analysis

from stack.components import failover
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


def primary_failover(lab: Lab, *, duration: float = 10.0, kill_at: float = 3.0,
                     rate: float = 40.0) -> dict[str, Any]:
    """SIGKILL the Postgres primary under write load. The failover manager fences it and
    promotes the standby; we count how long writes stopped, and look up every acknowledged
    prediction in the new primary."""
    killed: dict[str, float] = {}

    def kill() -> None:
        killed["wall"] = time.time()
        lab.component("postgres").proc.record.send(signal.SIGKILL)

    df = run_with_fault(lab, "primary-failover", duration, kill_at, kill, rate=rate)
    load = df[df["kind"] == "load"]
    acked = load[load["status"] == 200]["request_id"].tolist()
    standby = lab.component("standby")
    with standby.connect() as conn:
        found = {str(r[0]) for r in conn.execute(
            "SELECT request_id FROM predictions WHERE request_id = ANY(%s::uuid[])", (acked,))}
        role = "primary" if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] \
            else "standby"
    offset = float((load["wall"] - load["t"]).median())
    kill_t = killed["wall"] - offset
    after = load[load["t"] >= kill_t]
    failed_after = after[after["status"] != 200]
    ok_after = after[after["status"] == 200]
    # writes resume: the first acknowledged request sent after the last failure
    if len(failed_after):
        resumed_t = ok_after[ok_after["t"] > failed_after["t"].max()]["t"].min()
    else:
        resumed_t = ok_after["t"].min()
    events = failover.read_events(lab.run_dir)
    promoted = [e for e in events if e["action"] == "promoted"]
    return {
        "requests": len(load), "acknowledged": len(acked), "lost": len(set(acked) - found),
        "failed": int((load["status"] != 200).sum()),
        "writes_resumed_after_s": float(resumed_t - kill_t) if pd.notna(resumed_t) else None,
        "promoted_after_s": (promoted[0]["wall"] - killed["wall"]) if promoted else None,
        "standby_role_now": role, "records": df,
    }


def _wait_for_event(lab: Lab, action: str, after_wall: float, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["action"] == action and e["wall"] >= after_wall
               for e in failover.read_events(lab.run_dir)):
            return True
        time.sleep(0.2)
    return False


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


def sync_standby_lost(lab: Lab, *, duration: float = 8.0, kill_at: float = 2.0,
                      rate: float = 40.0, with_manager: bool = True) -> dict[str, Any]:
    """SIGKILL the synchronous standby under write load. Each commit waits for the standby's
    confirmation, so writes stall; the failover manager drops the synchronous requirement
    after its grace period and writes go on, no longer protected by a second copy.

    with_manager=False freezes the manager for the run, to show the stall it prevents: every
    commit then waits until the API's statement_timeout cancels the wait."""
    standby = lab.component("standby")
    manager = lab.component("failover")
    if not with_manager:
        manager.proc.pause()
    killed: dict[str, float] = {}

    def kill() -> None:
        killed["wall"] = time.time()
        standby.proc.record.send(signal.SIGKILL)

    try:
        df = run_with_fault(lab, f"sync-standby-lost{'' if with_manager else '-unmanaged'}",
                             duration, kill_at, kill, rate=rate)
    finally:
        manager.proc.resume()
    load = df[df["kind"] == "load"]
    offset = float((load["wall"] - load["t"]).median())
    events = [e for e in failover.read_events(lab.run_dir)
              if e["action"] == "sync_dropped" and e["wall"] >= killed["wall"]]
    dropped_t = events[0]["wall"] - offset if events else None
    stalled = _window(df, kill_at, dropped_t if dropped_t else duration)
    after = _window(df, (dropped_t or duration) + 0.5, duration)
    lab.restart("standby")
    if with_manager:
        _wait_for_event(lab, "sync_restored", after_wall=killed["wall"])
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
