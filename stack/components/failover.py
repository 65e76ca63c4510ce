"""The lab's failover manager: a small process that watches the Postgres primary and its
synchronous standby, as Patroni or pg_auto_failover would.

- Primary unreachable for `grace_s`: fence it (SIGKILL its recorded process group, so a frozen
  primary cannot wake up and take writes: no split brain), then promote the standby with
  pg_promote(). The API's multi-host connection string (target_session_attrs=read-write) finds
  the new primary on its next connection.
- Synchronous standby gone for `grace_s`: commits on the primary would wait for it forever, so
  drop synchronous_standby_names (writes go on, unprotected) and put it back when the standby
  streams again.

Every action is appended to failover.jsonl in the run directory, with its time.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

import psycopg

from stack.components.postgres import SUPERUSER, conninfo
from stack.components.daemon import LabDaemon, run_loop
from stack.runtime.processes import ProcessRecord

log = logging.getLogger(__name__)


def _connect(port: int, password: str, timeout: int = 1) -> psycopg.Connection:
    return psycopg.connect(conninfo(port, password, user=SUPERUSER, dbname="postgres",
                                    connect_timeout=timeout), autocommit=True)


def _answers(port: int, password: str) -> bool:
    try:
        with _connect(port, password) as conn:
            conn.execute("SET statement_timeout = 1000")
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


class Manager:
    """The decisions, one tick at a time (the process loop calls `tick`)."""

    def __init__(self, run_dir: Path, grace_s: float = 1.0, sync_name: str = "standby"):
        self.run_dir = Path(run_dir)
        self.grace_s = grace_s
        self.sync_name = sync_name
        self.primary_down_since: float | None = None
        self.standby_down_since: float | None = None
        self.promoted = False
        self.sync_dropped = False

    def _event(self, action: str, **facts: object) -> None:
        event = {"wall": time.time(), "action": action, **facts}
        with open(self.run_dir / "failover.jsonl", "a") as fh:
            fh.write(json.dumps(event) + "\n")
        log.warning("%s %s", action, facts)

    def tick(self) -> None:
        try:
            state = json.loads((self.run_dir / "lab.json").read_text())
        except (OSError, json.JSONDecodeError):
            return
        comps, password = state.get("components", {}), state["secrets"][SUPERUSER]
        if "postgres" not in comps or "standby" not in comps or self.promoted:
            return
        now = time.monotonic()
        primary, standby = comps["postgres"], comps["standby"]
        if _answers(primary["port"], password):
            self.primary_down_since = None
        else:
            self.primary_down_since = self.primary_down_since or now
            if now - self.primary_down_since >= self.grace_s:
                self._promote(primary, standby, password)
                return
        if _answers(standby["port"], password) and self._streaming(primary["port"], password):
            self.standby_down_since = None
            if self.sync_dropped:
                self._set_sync(primary["port"], password, self.sync_name)
                self.sync_dropped = False
                self._event("sync_restored", standby=self.sync_name)
        else:
            self.standby_down_since = self.standby_down_since or now
            if not self.sync_dropped and now - self.standby_down_since >= self.grace_s:
                if self._set_sync(primary["port"], password, ""):
                    self.sync_dropped = True
                    self._event("sync_dropped", reason="synchronous standby unreachable",
                                down_s=round(now - self.standby_down_since, 2))

    def _streaming(self, port: int, password: str) -> bool:
        try:
            with _connect(port, password) as conn:
                row = conn.execute("SELECT count(*) FROM pg_stat_replication WHERE "
                                   "application_name = %s AND state = 'streaming'",
                                   (self.sync_name,)).fetchone()
            return bool(row and row[0])
        except psycopg.Error:
            return True  # the primary's own trouble is handled above

    def _set_sync(self, port: int, password: str, names: str) -> bool:
        try:
            with _connect(port, password) as conn:
                conn.execute(psycopg.sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}")
                             .format(psycopg.sql.Literal(names)))
                conn.execute("SELECT pg_reload_conf()")
            return True
        except psycopg.Error as exc:
            log.warning("could not set synchronous_standby_names: %s", exc)
            return False

    def _promote(self, primary: dict, standby: dict, password: str) -> None:
        down_s = round(time.monotonic() - (self.primary_down_since or time.monotonic()), 2)
        # 1. fence: the old primary must never take a write again
        if primary.get("process"):
            ProcessRecord(**primary["process"]).send(signal.SIGKILL)
        # 2. promote; pg_promote waits until the standby accepts writes
        try:
            with _connect(standby["port"], password, timeout=2) as conn:
                conn.execute("SELECT pg_promote(wait => true, wait_seconds => 10)")
        except psycopg.Error as exc:
            self._event("promote_failed", error=str(exc))
            return
        self.promoted = True
        self._event("promoted", new_primary="standby", old_primary_down_s=down_s)


class FailoverManager(LabDaemon):
    """The lab component that runs the manager as its own process."""

    kind = "failover"
    module = "stack.components.failover"

    def __init__(self, name: str, run_dir: Path, grace_s: float = 1.0, interval_s: float = 0.25):
        super().__init__(name, run_dir, ["--grace", str(grace_s), "--interval", str(interval_s)],
                         f"promotes the standby {grace_s:g} s after the primary stops answering")
        self.grace_s = grace_s


def read_events(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "failover.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.components.failover", description=__doc__)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--grace", type=float, default=1.0)
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    manager = Manager(args.run_dir, grace_s=args.grace)
    log.info("watching the Postgres primary and standby of %s", args.run_dir)
    return run_loop(manager.tick, args.interval)


if __name__ == "__main__":
    sys.exit(main())
