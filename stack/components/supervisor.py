"""The AFTER lab's process supervisor: supervisord, as systemd's Restart=always or a Kubernetes
restart policy would be on a real host. A crashed replica, nginx or Redis (a segfault, the
memory limit's kill) is started again by it within about a second, with no human.

The BEFORE lab has none: there, a crashed process stays down until the on-call engineer
restarts it (`on_call_response_s` in a scenario). That difference is the lesson.

supervisord runs as one lab component, listening for its XML-RPC interface on a loopback port
(with a password). A supervised component declares itself to it as a `[program:<name>]` and
starts, stops and restarts through it (`SupervisedProcess`), so that a stop the lab asks for is
never mistaken for a crash. Its current PID is asked from supervisord whenever the recorded one
is no longer the lab's process (after a restart by the supervisor): faults, the memory limit
and `stackctl status/down` always act on the live process.
"""
from __future__ import annotations

import os
import secrets
import shlex
import signal
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from stack.components.base import Component
from stack.errors import ComponentFailed
from stack.runtime.processes import ManagedProcess, ProcessRecord, tail
from stack.runtime.procfs import start_time

RUNNING_STATES = ("STARTING", "RUNNING")
# What a crashed program waits before it is started again: none, from RUNNING (a program that
# dies within its first second is retried after 1, 2, 3 s, then left FATAL, as systemd's
# StartLimitBurst stops a crash loop).
START_SECONDS = 1
START_RETRIES = 3


class _Transport(xmlrpc.client.Transport):
    """supervisord's XML-RPC over HTTP, with a bounded wait for an answer."""

    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host: Any) -> Any:
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn

    def request(self, *args: Any, **kw: Any) -> Any:
        try:
            return super().request(*args, **kw)
        finally:
            self.close()  # one connection per call: nothing is left open between calls


def rpc(url: str, timeout: float = 30.0) -> Any:
    """The `supervisor` namespace of supervisord's XML-RPC interface at `url`."""
    return xmlrpc.client.ServerProxy(url, transport=_Transport(timeout)).supervisor


def _escape(text: str) -> str:
    return str(text).replace("%", "%%")  # supervisord expands %(name)s in its values


def program_ini(name: str, argv: list[str], log_path: Path, *, env: dict[str, str] | None,
                cwd: str | Path | None, user: str | None, stop_signal: int,
                stop_timeout: float) -> str:
    """The `[program:<name>]` section that runs `argv` as the lab would have run it."""
    lines = [f"[program:{name}]",
             f"command={_escape(shlex.join(str(a) for a in argv))}",
             "autostart=false",
             "autorestart=true",  # Restart=always
             f"startsecs={START_SECONDS}",
             f"startretries={START_RETRIES}",
             f"stopsignal={signal.Signals(stop_signal).name.removeprefix('SIG')}",
             f"stopwaitsecs={max(1, round(stop_timeout))}",
             "killasgroup=true",
             "redirect_stderr=true",
             f"stdout_logfile={_escape(str(log_path))}",
             "stdout_logfile_maxbytes=0",
             "stdout_logfile_backups=0"]
    if cwd:
        lines.append(f"directory={_escape(str(cwd))}")
    if user:
        lines.append(f"user={user}")
    # only what differs from supervisord's own environment (the lab's, when it started)
    extra = {k: v for k, v in (env or {}).items() if os.environ.get(k) != v}
    if extra:
        quoted = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(extra.items())
                          if '"' not in v and "\n" not in v)
        lines.append(f"environment={quoted}")
    return "\n".join(lines) + "\n"


# A liveness check, as a Kubernetes livenessProbe: superlance's httpok (the Supervisor project's
# event listener) GETs a URL on supervisord's TICK_5 and restarts the program when it does not
# answer 200 within LIVENESS_TIMEOUT_S. A crash is the supervisor's own job; this is for a
# process that runs but answers nothing (a hang), which no exit status reveals.
LIVENESS_TICK_S = 5
LIVENESS_TIMEOUT_S = 2


def liveness_name(program: str) -> str:
    return f"{program}-liveness"


def liveness_ini(program: str, url: str, log_path: Path, *, username: str,
                 password: str) -> str:
    """The `[eventlistener:<program>-liveness]` section that restarts `program` when `url`
    stops answering (only while it is RUNNING: a program the lab stopped is left alone)."""
    argv = [sys.executable, "-m", "superlance.httpok", "-p", program,
            "-t", str(LIVENESS_TIMEOUT_S), "-E", "-n", liveness_name(program), url]
    env = f'SUPERVISOR_USERNAME="{_escape(username)}",SUPERVISOR_PASSWORD="{_escape(password)}"'
    return "\n".join([f"[eventlistener:{liveness_name(program)}]",
                      f"command={_escape(shlex.join(argv))}",
                      f"events=TICK_{LIVENESS_TICK_S}",
                      "autostart=true",
                      "autorestart=true",
                      f"environment={env}",
                      f"stderr_logfile={_escape(str(log_path))}",
                      "stderr_logfile_maxbytes=0",
                      "stderr_logfile_backups=0"]) + "\n"


def _credentials(url: str) -> tuple[str, str]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.username or "", parts.password or ""


class SupervisedProcess(ManagedProcess):
    """A lab process that supervisord starts, restarts when it dies, and stops when asked."""

    supervised = True

    def __init__(self, url: str, programs_dir: Path, name: str, argv: list[str],
                 log_path: str | Path, *, liveness_url: str | None = None, **kw: Any):
        self._record: ProcessRecord | None = None
        super().__init__(name, argv, log_path, **kw)
        self.url = url
        self.programs_dir = Path(programs_dir)
        self.liveness_url = liveness_url  # restarted when it stops answering (httpok)

    # -- the live process, asked from supervisord when the recorded one has gone -----------
    @property
    def record(self) -> ProcessRecord | None:
        rec = self._record
        if rec is not None and rec.is_ours():
            return rec
        fresh = self._current()
        if fresh is not None:
            self._record = fresh
        return self._record

    @record.setter
    def record(self, value: ProcessRecord | None) -> None:
        self._record = value

    def info(self) -> dict[str, Any]:
        try:
            return rpc(self.url, timeout=10).getProcessInfo(self.name)
        except (OSError, xmlrpc.client.Error) as exc:
            raise ComponentFailed(self.name, f"its supervisor did not answer: {exc}",
                                  str(self.log_path)) from exc

    def _current(self) -> ProcessRecord | None:
        try:
            info = self.info()
        except ComponentFailed:
            return None
        pid = int(info.get("pid") or 0)
        started = start_time(pid) if pid else None
        if not pid or started is None:
            return None
        return ProcessRecord(self.name, pid, pid, started, str(self.log_path))

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> ProcessRecord:
        """Declare (or update) the program, then have supervisord start it."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        ini = program_ini(self.name, self.argv, self.log_path, env=self.env, cwd=self.cwd,
                          user=self.user, stop_signal=self.stop_signal,
                          stop_timeout=self.stop_timeout)
        groups = [self.name]
        if self.liveness_url:
            username, password = _credentials(self.url)
            ini += "\n" + liveness_ini(self.name, self.liveness_url,
                                       self.log_path.with_name("liveness.log"),
                                       username=username, password=password)
            groups.append(liveness_name(self.name))
        path = self.programs_dir / f"{self.name}.ini"
        server = rpc(self.url)
        try:
            if not path.exists() or path.read_text() != ini:
                path.write_text(ini)
                added, changed, _removed = server.reloadConfig()[0]
                for group in groups:
                    if group in changed:
                        try:
                            server.stopProcessGroup(group, True)
                        except xmlrpc.client.Fault:
                            pass  # not running
                        server.removeProcessGroup(group)
                    if group in added or group in changed:
                        server.addProcessGroup(group)  # a listener starts with its group
            server.startProcess(self.name, False)
        except (OSError, xmlrpc.client.Error) as exc:
            raise ComponentFailed(self.name, f"its supervisor could not start it: {exc}",
                                  str(self.log_path), tail(self.log_path)) from exc
        self._record = None
        rec = self.record
        if rec is None:
            raise ComponentFailed(self.name, "its supervisor started it but it is not running",
                                  str(self.log_path), tail(self.log_path))
        return rec

    def liveness_pid(self) -> int | None:
        """The PID of its liveness check's listener (None without one, or when it is down)."""
        if not self.liveness_url:
            return None
        try:
            info = rpc(self.url, timeout=10).getProcessInfo(liveness_name(self.name))
        except (OSError, xmlrpc.client.Error):
            return None
        return int(info.get("pid") or 0) or None

    def alive(self) -> bool:
        try:
            return self.info().get("statename") in RUNNING_STATES
        except ComponentFailed:
            return False

    def wait_ready(self, check: Any, deadline_s: float, interval: float = 0.05) -> float:
        """As ManagedProcess.wait_ready; the supervisor's word says whether it gave up."""
        t0 = time.monotonic()
        while True:
            state = self.info().get("statename")
            if state in ("FATAL", "STOPPED", "EXITED"):
                raise ComponentFailed(self.name, f"exited before it was ready (its supervisor "
                                      f"says {state})", str(self.log_path), tail(self.log_path))
            try:
                if state in RUNNING_STATES and check():
                    return time.monotonic() - t0
            except Exception:  # a check that raises counts as not ready yet
                pass
            if time.monotonic() - t0 > deadline_s:
                self.stop()
                raise ComponentFailed(self.name, f"not ready within {deadline_s:g} s",
                                      str(self.log_path), tail(self.log_path))
            time.sleep(interval)

    def stop(self) -> str:
        """Ask supervisord to stop it (its stop signal, then SIGKILL to the group after the
        stop timeout): a stop the lab wants is not a crash, so it is not restarted."""
        rec = self.record
        if rec is not None:
            rec.resume()  # a paused (hung) process cannot handle its stop signal
        try:
            rpc(self.url, timeout=self.stop_timeout + 10).stopProcess(self.name, True)
        except xmlrpc.client.Fault as exc:
            if "NOT_RUNNING" not in exc.faultString and "BAD_NAME" not in exc.faultString:
                raise ComponentFailed(self.name, f"its supervisor could not stop it: "
                                      f"{exc.faultString}") from exc
            return "not running"
        except OSError:  # supervisord is gone: stop the recorded process ourselves
            return rec.stop(stop_signal=self.stop_signal, timeout=self.stop_timeout) \
                if rec is not None else "gone"
        return "graceful"

    @classmethod
    def attached_to(cls, url: str, programs_dir: Path, record: ProcessRecord, *,
                    stop_signal: int = signal.SIGTERM, stop_timeout: float = 5.0
                    ) -> "SupervisedProcess":
        proc = cls(url, programs_dir, record.name, [], record.log, stop_signal=stop_signal,
                   stop_timeout=stop_timeout)
        proc._record = record
        return proc


def current_record(comp: dict[str, Any], recorded: ProcessRecord) -> ProcessRecord:
    """The live process of a component as lab.json describes it: the recorded one, or, when
    its supervisor has restarted it since, the one supervisord runs now."""
    url = comp.get("supervisor_url")
    if not url or recorded.is_ours():
        return recorded
    try:
        pid = int(rpc(url, timeout=2).getProcessInfo(recorded.name).get("pid") or 0)
    except (OSError, xmlrpc.client.Error):
        return recorded
    started = start_time(pid) if pid else None
    if not pid or started is None:
        return recorded
    return ProcessRecord(recorded.name, pid, pid, started, recorded.log)


class Supervisor(Component):
    """supervisord in the foreground, its XML-RPC on a loopback port, its programs' sections
    in <run>/supervisor/programs/."""

    kind = "supervisor"
    stop_order = 8  # last: the programs it runs are stopped (through it) before it
    stop_signal = signal.SIGTERM  # supervisord stops its programs, then exits

    def __init__(self, name: str, run_dir: Path, port: int, *, password: str | None = None):
        super().__init__(name, run_dir, port, start_deadline_s=10.0, stop_timeout_s=20.0)
        self.password = password or secrets.token_hex(12)

    @property
    def rpc_url(self) -> str:
        return f"http://lab:{self.password}@127.0.0.1:{self.port}/RPC2"

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}/RPC2"

    @property
    def conf_path(self) -> Path:
        return self.dir / "supervisord.conf"

    @property
    def programs_dir(self) -> Path:
        return self.dir / "programs"

    @property
    def log_path(self) -> Path:
        return self.dir / "supervisord.log"

    def prepare(self) -> None:
        super().prepare()
        self.programs_dir.mkdir(exist_ok=True)
        for old in self.programs_dir.glob("*.ini"):
            old.unlink()  # a fresh supervisord knows only what this lab declares
        d = self.dir
        self.conf_path.write_text("\n".join([
            "; written by the lab: the AFTER lab's process supervisor",
            "[supervisord]",
            "nodaemon=true",
            f"logfile={_escape(str(self.log_path))}",
            "logfile_maxbytes=0",
            "loglevel=info",
            f"pidfile={_escape(str(d / 'supervisord.pid'))}",
            f"childlogdir={_escape(str(d))}",
            "",
            "[inet_http_server]",
            f"port=127.0.0.1:{self.port}",
            "username=lab",
            f"password={self.password}",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[include]",
            f"files={_escape(str(self.programs_dir))}/*.ini",
            ""]))
        self.conf_path.chmod(0o600)  # it holds the RPC password

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(self.conf_path)]

    def ready(self) -> bool:
        try:
            return rpc(self.rpc_url, timeout=1).getState().get("statename") == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def extra_state(self) -> dict[str, Any]:
        return {"rpc_url": self.rpc_url, "password": self.password,
                "programs_dir": str(self.programs_dir)}

    def program(self, name: str, argv: list[str], log_path: Path, **kw: Any
                ) -> SupervisedProcess:
        """The process object of a component this supervisor runs."""
        return SupervisedProcess(self.rpc_url, self.programs_dir, name, argv, log_path, **kw)
