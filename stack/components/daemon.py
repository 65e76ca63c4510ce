"""The lab's own small Python processes (the memory watchdog): one
component class to start and stop them, and one loop that ticks until SIGTERM."""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Callable

from stack.components.base import Component


class LabDaemon(Component):
    """A lab component that runs `python -m <module> --run-dir RUN <args>` in its own
    process group; it is ready as soon as it runs (it has no port)."""

    kind = "daemon"
    stop_order = 2  # after the replicas it watches, before the servers it manages
    module = ""

    def __init__(self, name: str, run_dir: Path, args: list[str], description: str):
        super().__init__(name, run_dir, None, start_deadline_s=5.0, stop_timeout_s=2.0)
        self.args = args
        self.description = description

    @property
    def address(self) -> str:
        return self.description  # no port: what it does stands in for where it answers

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def prepare(self) -> None:
        pass  # it writes into the run directory itself

    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--run-dir", str(self.run_dir), *self.args]

    def ready(self) -> bool:
        return self.proc is not None and self.proc.alive()


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
