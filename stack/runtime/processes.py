"""Start, wait for, pause, resume and stop OS processes, each in its own process group with
its log in the run directory.

Only processes the lab recorded are ever signalled: a `ProcessRecord` keeps the PID, the
process group and the kernel's start time of the leader, so a later process (``stackctl down``
after the notebook kernel died) can tell the lab's process from an unrelated one that reused
the PID.
"""
from __future__ import annotations

import logging
import os
import pwd
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from stack.errors import ComponentFailed
from stack.runtime.procfs import group_and_descendants, group_members, start_time

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], bool]


def tail(path: str | Path, lines: int = 15) -> str:
    """The last lines of a log file ('' when it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


@dataclass
class ProcessRecord:
    """What the state file keeps of one started process."""

    name: str
    pid: int
    pgid: int
    start_time: int
    log: str

    def is_ours(self) -> bool:
        """The leader is alive and is the very process the lab started."""
        return start_time(self.pid) == self.start_time

    def group_alive(self) -> bool:
        """Any process of the lab's group is still running.

        Linux never hands out a PID while a process group of that number exists, so members
        of the group are the lab's as long as the leader is ours or gone.
        """
        leader = start_time(self.pgid)
        if leader is not None and leader != self.start_time:
            return False  # the number now belongs to a different process
        return bool(group_members(self.pgid))

    def send(self, sig: int) -> bool:
        """Send a signal to the whole group; False when nothing of ours is left."""
        if not self.group_alive():
            return False
        try:
            os.killpg(self.pgid, sig)
            return True
        except ProcessLookupError:
            return False

    def signal_leader(self, sig: int) -> bool:
        if not self.is_ours():
            return False
        try:
            os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def wait_gone(self, timeout: float, popen: subprocess.Popen | None = None) -> bool:
        """Wait until no process of the group is left (and our own child is reaped: a killed
        multi-threaded process shows as a zombie before its threads have all exited)."""
        deadline = time.monotonic() + timeout
        while True:
            reaped = popen is None or popen.poll() is not None
            if reaped and not self.group_alive():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def stop(self, *, stop_signal: int = signal.SIGTERM, timeout: float = 5.0,
             popen: subprocess.Popen | None = None) -> str:
        """Stop in steps: the component's own stop signal to the leader, wait, SIGTERM to the
        group, then SIGKILL for whatever is left. Returns how it ended."""
        # 1. the graceful request (e.g. SIGINT = Postgres fast shutdown, SIGQUIT = nginx quit)
        self.resume()  # a stopped process cannot handle its stop signal
        if self.signal_leader(stop_signal) and self.wait_gone(timeout, popen):
            return "graceful"
        # 2. the whole group, in case the leader died and left children behind
        if self.send(signal.SIGTERM) and self.wait_gone(min(timeout, 2.0), popen):
            return "terminated"
        # 3. force
        self.send(signal.SIGKILL)
        self.wait_gone(2.0, popen)
        return "killed" if not self.group_alive() else "still running"

    def pause(self) -> bool:
        """SIGSTOP the group, then the descendants that left it: all of it hangs."""
        return self._send_all(signal.SIGSTOP)

    def resume(self) -> bool:
        return self._send_all(signal.SIGCONT)

    def _send_all(self, sig: int) -> bool:
        if not self.send(sig):
            return False
        _, descendants = group_and_descendants(self.pgid)
        for pid in descendants:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return True

    def to_dict(self) -> dict:
        return asdict(self)


class ManagedProcess:
    """One OS process of the lab: started in its own session (so its own process group),
    stdout and stderr appended to its log file, optionally as another (unprivileged) user."""

    def __init__(self, name: str, argv: list[str], log_path: str | Path, *,
                 env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 user: str | None = None, stop_signal: int = signal.SIGTERM,
                 stop_timeout: float = 5.0):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.user = user
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.popen: subprocess.Popen | None = None
        self.record: ProcessRecord | None = None

    @property
    def pid(self) -> int | None:
        return self.record.pid if self.record else None

    def start(self) -> ProcessRecord:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            if self.user:
                os.chown(self.log_path, pwd.getpwnam(self.user).pw_uid, -1)
            log.debug("starting %s: %s", self.name, " ".join(self.argv))
            try:
                self.popen = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    env=self.env, cwd=self.cwd, start_new_session=True,
                    user=self.user, group=pwd.getpwnam(self.user).pw_gid if self.user else None,
                    extra_groups=[] if self.user else None,
                )
            except OSError as exc:
                raise ComponentFailed(self.name, f"could not execute {self.argv[0]}: {exc}",
                                      str(self.log_path)) from exc
        pid = self.popen.pid
        started = start_time(pid)
        self.record = ProcessRecord(self.name, pid, pid, started or 0, str(self.log_path))
        return self.record

    def alive(self) -> bool:
        """Running: our child has not exited (or, attached from a state file, its group lives)."""
        if self.popen is not None:
            return self.popen.poll() is None
        return self.record is not None and self.record.group_alive()

    @classmethod
    def attached(cls, record: ProcessRecord, *, stop_signal: int = signal.SIGTERM,
                 stop_timeout: float = 5.0) -> "ManagedProcess":
        """A process another Python process started, known from the lab's state file."""
        proc = cls(record.name, [], record.log, stop_signal=stop_signal,
                   stop_timeout=stop_timeout)
        proc.record = record
        return proc

    def wait_ready(self, check: ReadyCheck, deadline_s: float, interval: float = 0.05) -> float:
        """Poll `check` until it returns True, under one deadline. Fails at once if the process
        exits; on timeout stops it. Either way the error names the component and shows its
        log's last lines. Returns the seconds it took."""
        t0 = time.monotonic()
        while True:
            if self.popen is not None and self.popen.poll() is not None:
                raise ComponentFailed(self.name, f"exited with code {self.popen.returncode} "
                                      "before it was ready", str(self.log_path),
                                      tail(self.log_path))
            try:
                if check():
                    return time.monotonic() - t0
            except Exception as exc:  # a check that raises counts as not ready yet
                log.debug("%s not ready: %s", self.name, exc)
            if time.monotonic() - t0 > deadline_s:
                self.stop()
                raise ComponentFailed(self.name, f"not ready within {deadline_s:g} s",
                                      str(self.log_path), tail(self.log_path))
            time.sleep(interval)

    def stop(self) -> str:
        if self.record is None:
            return "not started"
        how = self.record.stop(stop_signal=self.stop_signal, timeout=self.stop_timeout,
                               popen=self.popen)
        if self.popen is not None:
            try:
                self.popen.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        return how

    def pause(self) -> bool:
        return self.record.pause() if self.record else False

    def resume(self) -> bool:
        return self.record.resume() if self.record else False
