"""What the lab's small HTTP services share (exporters, the probe exporter, Alertmanager,
the webhook receiver): one process in its own folder, a port it refuses to share, ready when
one URL answers 200, stopped through its recorded process."""
from __future__ import annotations

import signal
from pathlib import Path

import httpx

from stack.runtime import ports
from stack.errors import ComponentFailed
from stack.runtime.processes import ManagedProcess


class HttpService:
    """Subclasses give `kind`, `ready_path` and call `_launch(argv, ...)` from `start()`."""

    kind = "service"
    ready_path = "/"

    def __init__(self, name: str, run_dir: Path, port: int, start_deadline_s: float = 15.0):
        self.name = name
        self.dir = Path(run_dir) / name
        self.port = port
        self.start_deadline_s = start_deadline_s
        self.proc: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _launch(self, argv: list[str], **kw: object) -> ManagedProcess:
        """Refuse a taken port, make the folder, start the process with its log there."""
        if ports.is_listening(self.port):
            raise ComponentFailed(self.name, f"port {self.port} is already in use: stop what "
                                  "listens there or pick another port")
        self.dir.mkdir(parents=True, exist_ok=True)
        kw.setdefault("stop_signal", signal.SIGTERM)
        self.proc = ManagedProcess(self.name, argv, self.dir / "server.log", **kw)
        self.proc.start()
        return self.proc

    def ready(self) -> bool:
        try:
            return httpx.get(self.address + self.ready_path, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self) -> float:
        assert self.proc is not None
        return self.proc.wait_ready(self.ready, self.start_deadline_s, interval=0.1)

    def stop(self) -> str:
        return self.proc.stop() if self.proc else "not started"
