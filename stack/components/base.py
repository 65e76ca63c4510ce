"""One lifecycle for every real program a lab runs.

A component writes only what is its own: its config (`prepare`), its command line (`argv`), how
it is launched (`launch_options`: environment, user, working folder), its readiness check
(`ready`), its graceful stop signal and its place in the stop order. The base does the rest,
the same way for all (the start ladder of mirakuru's StartCheckExecutor):

    start:  1. refuse a port that something already listens on
            2. prepare its folder and config
            3. launch it in its own process group, its log in its folder
    wait_ready: one polled condition under one deadline; fail at once if the process exited,
            and on a timeout stop it; the error names the component, the deadline and its log
    stop:   1. its own graceful stop signal (nginx SIGQUIT, Postgres SIGINT = fast shutdown,
               uvicorn and redis SIGTERM), 2. SIGTERM to the group, 3. SIGKILL
            (stack.runtime.processes.ProcessRecord.stop)
    state:  what lab.json records, so that a later process can stop it by its PID
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx

from stack.errors import ComponentFailed
from stack.runtime import ports
from stack.runtime.processes import ManagedProcess


class Component:
    """A real program of the lab. Subclasses set `kind`, `stop_order`, `stop_signal` and write
    `argv()` and `ready()`; `prepare()`, `launch_options()` and `extra_state()` when they need."""

    kind = "component"
    stop_order = 5  # lower stops first: from the front door inwards
    stop_signal: int = signal.SIGTERM
    ready_interval_s = 0.05

    def __init__(self, name: str, run_dir: Path, port: int | None, *,
                 start_deadline_s: float = 15.0, stop_timeout_s: float = 5.0):
        self.name = name
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / name
        self.port = port
        self.start_deadline_s = start_deadline_s
        self.stop_timeout_s = stop_timeout_s
        self.proc: ManagedProcess | None = None
        # the lab's process supervisor (stack.components.supervisor.Supervisor), when it has
        # one: it then starts, restarts after a crash, and stops this component's process
        self.supervisor: Any = None

    # a URL that answers 200 while the process works: under a supervisor, a process that
    # stops answering it is restarted (a hang no exit status shows); None: no such check
    liveness_url: str | None = None

    # -- what each component writes ----------------------------------------------------------
    @property
    def address(self) -> str:
        """Where it answers (a URL; its scheme says the protocol)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    def own_ports(self) -> list[int]:
        """The ports it will listen on, refused at start if something already does."""
        return [self.port] if self.port else []

    def prepare(self) -> None:
        """Make its folder (and, in subclasses, write its config) before it is launched."""
        self.dir.mkdir(parents=True, exist_ok=True)

    def argv(self) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} must say how it is launched")

    def launch_options(self) -> dict[str, Any]:
        """Extra ManagedProcess options: env, cwd, user."""
        return {}

    def ready(self) -> bool:
        raise NotImplementedError(f"{type(self).__name__} must say when it is ready")

    def extra_state(self) -> dict[str, Any]:
        """Facts besides the common ones that lab.json keeps (e.g. an admin URL)."""
        return {}

    # -- the lifecycle, the same for all -------------------------------------------------------
    def start(self) -> ManagedProcess:
        # 1. refuse a port that something already listens on
        for port in self.own_ports():
            if ports.is_listening(port):
                raise ComponentFailed(self.name, f"port {port} is already in use: stop what "
                                      "listens there or pick another port")
        # 2. its folder and config
        self.prepare()
        # 3. launch it in its own process group, its log in its folder
        make = self.supervisor.program if self.supervisor is not None else ManagedProcess
        live = ({"liveness_url": self.liveness_url}
                if self.supervisor is not None and self.liveness_url else {})
        self.proc = make(self.name, self.argv(), self.log_path, stop_signal=self.stop_signal,
                         stop_timeout=self.stop_timeout_s, **live, **self.launch_options())
        self.proc.start()
        return self.proc

    def wait_ready(self) -> float:
        """Seconds until `ready()`; raises ComponentFailed (with the log's tail) if it exits
        first or is not ready within `start_deadline_s`."""
        if self.proc is None:
            raise ComponentFailed(self.name, "was never started")
        return self.proc.wait_ready(self.ready, self.start_deadline_s,
                                    interval=self.ready_interval_s)

    def stop(self) -> str:
        """Graceful signal, then SIGTERM to the group, then SIGKILL; returns how it ended."""
        return self.proc.stop() if self.proc else "not started"

    def state(self) -> dict[str, Any]:
        """What lab.json records of it (a later `stackctl down` stops it from this alone)."""
        rec = self.proc.record if self.proc and self.proc.record else None
        return {"kind": self.kind, "address": self.address, "port": self.port,
                "stop_order": self.stop_order, "stop_signal": int(self.stop_signal),
                "stop_timeout": self.stop_timeout_s,
                "process": rec.to_dict() if rec else None, **self.extra_state(),
                **({"supervisor_url": self.supervisor.rpc_url} if self.supervisor else {})}


class HttpComponent(Component):
    """A component that is ready when one URL answers 200."""

    ready_path = "/"
    ready_interval_s = 0.1

    def ready(self) -> bool:
        try:
            return httpx.get(self.address + self.ready_path, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False


class HttpService(HttpComponent):
    """The lab's small HTTP services (exporters, the probe exporter, Alertmanager, the webhook
    receiver): ready when `ready_path` answers 200, stopped with SIGTERM."""

    stop_order = -1  # before nginx: nothing depends on them

    def __init__(self, name: str, run_dir: Path, port: int, start_deadline_s: float = 15.0,
                 stop_timeout_s: float = 5.0):
        super().__init__(name, run_dir, port, start_deadline_s=start_deadline_s,
                         stop_timeout_s=stop_timeout_s)
