"""The lab's own small Python processes (the memory watchdog, the failover manager): one
component class to start and stop them, and one loop that ticks until SIGTERM."""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Callable

from stack.runtime.processes import ManagedProcess


class LabDaemon:
    """A lab component that runs `python -m <module> --run-dir RUN <args>` in its own
    process group; it is ready as soon as it runs (it has no port)."""

    kind = "daemon"
    module = ""

    def __init__(self, name: str, run_dir: Path, args: list[str], address: str):
        self.name = name
        self.run_dir = Path(run_dir)
        self.args = args
        self.address = address
        self.port = None
        self.proc: ManagedProcess | None = None

    def start(self) -> ManagedProcess:
        self.proc = ManagedProcess(
            self.name, [sys.executable, "-m", self.module, "--run-dir", str(self.run_dir),
                        *self.args], self.run_dir / f"{self.name}.log", stop_timeout=2.0)
        self.proc.start()
        return self.proc

    def ready(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def wait_ready(self) -> float:
        return 0.0

    def stop(self) -> str:
        return self.proc.stop() if self.proc else "not started"


def run_loop(tick: Callable[[], object], interval: float) -> int:
    """Call `tick` every `interval` seconds until SIGTERM (the lab's stop signal)."""
    running = True

    def _stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, _stop)
    while running:
        tick()
        time.sleep(interval)
    return 0
