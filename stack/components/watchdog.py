"""The lab's memory limit: a small process that kills an API replica whose memory passes the
topology's limit, as the kernel's OOM killer does to a container over its memory limit.

It reads the lab's state file on every tick, so it follows replicas that were restarted, and
signals only the process groups recorded there. Each kill is appended to oom-kills.jsonl.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

from stack.components.daemon import LabDaemon, run_loop
from stack.components.supervisor import current_record
from stack.runtime import procfs
from stack.runtime.processes import ProcessRecord

log = logging.getLogger(__name__)

# How often the limit is checked. A leak of 3 MB per request on a replica taking 20 req/s
# passes the limit by at most 30 MB before the kill; a tick costs about 0.5 ms of CPU.
INTERVAL_S = 0.5
TREE_TTL_S = 5.0  # how long a group's list of processes is reused (a replica rarely forks)
_TREES: dict[int, tuple[float, list[int]]] = {}


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in a group whose leader is `pgid`, in MB.

    The group's processes are looked up again every TREE_TTL_S (the lookup reads a file per
    thread, and a busy replica runs dozens); their memory is read on every call."""
    now = time.monotonic()
    cached = _TREES.get(pgid)
    if cached is None or now >= cached[0]:
        tree = procfs.descendants(pgid)
        if tree is None:  # no /proc/<pid>/task/<tid>/children here: scan the process table
            members = procfs.group_members(pgid)
        else:
            members = [pid for pid in tree if procfs.pgid_of(pid) == pgid]
        _TREES[pgid] = cached = (now + TREE_TTL_S, members)
    return sum(procfs.rss_mb(pid) for pid in cached[1])


class StateFile:
    """The lab's state file, parsed again only when it changed."""

    def __init__(self, path: Path):
        self.path, self._stamp, self._data = path, None, {}

    def read(self) -> dict:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp != self._stamp:
                self._data, self._stamp = json.loads(self.path.read_text()), stamp
        except (OSError, json.JSONDecodeError):
            return {}
        return self._data


# The live process of each replica restarted by the lab's supervisor since lab.json was
# written (asked from supervisord once per restart, not on every tick).
_LIVE: dict[str, ProcessRecord] = {}


def _live_record(name: str, comp: dict) -> ProcessRecord:
    rec = ProcessRecord(**comp["process"])
    if rec.is_ours():
        return rec
    cached = _LIVE.get(name)
    if cached is not None and cached.is_ours():
        return cached
    rec = current_record(comp, rec)
    if rec.is_ours():
        _LIVE[name] = rec
    return rec


def tick(state_path: Path | StateFile, limit_mb: float, kills_path: Path) -> list[str]:
    """One pass over the lab's API replicas; returns the names it killed."""
    state = (state_path if isinstance(state_path, StateFile) else StateFile(state_path)).read()
    killed = []
    for name, comp in state.get("components", {}).items():
        if comp.get("kind") != "api" or not comp.get("process"):
            continue
        rec = _live_record(name, comp)
        if not rec.is_ours():
            continue
        rss = group_rss_mb(rec.pgid)
        if rss > limit_mb:
            rec.send(signal.SIGKILL)
            killed.append(name)
            event = {"wall": time.time(), "component": name, "pid": rec.pid,
                     "rss_mb": round(rss, 1), "limit_mb": limit_mb}
            with open(kills_path, "a") as fh:
                fh.write(json.dumps(event) + "\n")
            log.warning("out of memory: killed %s (pid %d, %.0f MB > %.0f MB)", name, rec.pid,
                        rss, limit_mb)
    return killed


class MemoryWatchdog(LabDaemon):
    """The lab component that runs this module as its own process."""

    kind = "watchdog"
    module = "stack.components.watchdog"

    def __init__(self, name: str, run_dir: Path, limit_mb: float,
                 interval_s: float = INTERVAL_S):
        super().__init__(name, run_dir, ["--limit-mb", str(limit_mb), "--interval",
                                         str(interval_s)],
                         f"memory limit {limit_mb:g} MB per API replica")
        self.limit_mb = limit_mb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.components.watchdog", description=__doc__)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--limit-mb", required=True, type=float)
    parser.add_argument("--interval", type=float, default=INTERVAL_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    state_path = StateFile(args.run_dir / "lab.json")
    log.info("watching API replicas of %s: limit %.0f MB", args.run_dir, args.limit_mb)
    return run_loop(lambda: tick(state_path, args.limit_mb, args.run_dir / "oom-kills.jsonl"),
                    args.interval)


if __name__ == "__main__":
    sys.exit(main())
