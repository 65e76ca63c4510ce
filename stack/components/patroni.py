"""A Postgres node run by Patroni: the agent starts, stops, promotes and rewinds its Postgres,
and holds the cluster's leader key in etcd while it is the primary.

What Patroni gives the lab (and what the course teaches from `patronictl list` and
`patronictl history`):
- one leader lock with a TTL: only the node holding the key in etcd runs as primary; a node
  that loses or cannot renew it demotes itself (fencing), and the replica that takes the key
  promotes;
- a node that comes back while another holds the key starts as a replica, rewinding its
  diverged WAL with pg_rewind first: it never accepts a write on its old timeline;
- synchronous_mode: Patroni names the synchronous standby itself and, not strict, drops the
  requirement when no standby streams, so a lost standby does not stall every write.

Patroni starts Postgres in a session of its own. The node's processes are therefore two
groups: the agent's (recorded in lab.json like any component) and the postmaster's, found
from the data directory's postmaster.pid whenever it is needed (Patroni restarts Postgres
under a new PID after a crash).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from stack.components.postgres import REPLICATION_ROLE, SUPERUSER, PostgresServer, _own
from stack.runtime import binaries
from stack.runtime.processes import ProcessRecord
from stack.runtime.procfs import start_time

log = logging.getLogger(__name__)

SCOPE = "uptime-lab"
TTL_S = 20  # the smallest leader-key TTL Patroni accepts
LOOP_WAIT_S = 2  # how often each agent checks its Postgres and renews or watches the key
RETRY_TIMEOUT_S = 5  # etcd and Postgres operations retried this long before demoting


def render_config(name: str, *, port: int, rest_port: int, etcd_address: str, data_dir: Path,
                  bin_dir: str, secrets: dict[str, str], max_connections: int,
                  synchronous: bool, pgpass: Path) -> dict[str, Any]:
    """patroni.yml for one node (a pure function of its arguments)."""
    host = etcd_address.removeprefix("http://")
    return {
        "scope": SCOPE,
        "name": name,
        "log": {"level": "INFO", "format": "%(asctime)s %(levelname)s: %(message)s"},
        "restapi": {"listen": f"127.0.0.1:{rest_port}",
                    "connect_address": f"127.0.0.1:{rest_port}"},
        "etcd3": {"host": host},
        "bootstrap": {
            "dcs": {
                "ttl": TTL_S, "loop_wait": LOOP_WAIT_S, "retry_timeout": RETRY_TIMEOUT_S,
                "maximum_lag_on_failover": 1024 * 1024,
                "synchronous_mode": synchronous, "synchronous_mode_strict": False,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "max_connections": max_connections,
                        "wal_level": "replica", "hot_standby": "on", "wal_log_hints": "on",
                        "max_wal_senders": 5, "max_replication_slots": 5,
                        "wal_keep_size": "64MB",
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, {"auth": "scram-sha-256"}],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{port}",
            "connect_address": f"127.0.0.1:{port}",
            "data_dir": str(data_dir),
            "bin_dir": bin_dir,
            "pgpass": str(pgpass),
            "authentication": {
                "superuser": {"username": SUPERUSER, "password": secrets[SUPERUSER]},
                "replication": {"username": REPLICATION_ROLE,
                                "password": secrets[REPLICATION_ROLE]},
            },
            "parameters": {
                "unix_socket_directories": "",
                "shared_buffers": "64MB",
                "wal_sender_timeout": "5s",
                "wal_receiver_timeout": "5s",
                "wal_receiver_status_interval": "1s",
                # a standby whose primary restarted asks again after 250 ms, not 5 s: the
                # primary's commits wait for it (synchronous_mode) until it is back
                "wal_retrieve_retry_interval": "250ms",
                "logging_collector": "off",
                "log_min_messages": "warning",
                "log_line_prefix": "%m [%p] ",
            },
            "pg_hba": [
                "host all all 127.0.0.1/32 scram-sha-256",
                f"host replication {REPLICATION_ROLE} 127.0.0.1/32 scram-sha-256",
            ],
            "basebackup": [{"checkpoint": "fast"}],
        },
        "watchdog": {"mode": "off"},
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False,
                 "nosync": False},
    }


def postmaster_record(name: str, data_dir: Path, log_path: str) -> ProcessRecord | None:
    """The running postmaster of a data directory, or None. Its PID comes from postmaster.pid
    and counts only if that process's command line names this data directory (a stale file
    or a reused PID is not ours)."""
    try:
        pid = int((Path(data_dir) / "postmaster.pid").read_text().split("\n", 1)[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    started = start_time(pid)
    if str(data_dir) not in cmdline or started is None:
        return None
    try:
        # the group of the short-lived process that started it (Patroni's pg_ctl stand-in
        # calls setsid, then starts the postmaster): the postmaster and its backends
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return None
    return ProcessRecord(f"{name}-postmaster", pid, pgid, started, log_path)


class PatroniNode(PostgresServer):
    """One Postgres node: its Patroni agent (the recorded process) and the Postgres it runs.
    The name stays the node's whatever its role: `role` asks the node."""

    kind = "patroni"
    stop_order = 4  # after everything that uses the database, before etcd
    stop_signal = signal.SIGTERM  # Patroni shuts its Postgres down, then exits

    def __init__(self, name: str, run_dir: Path, port: int, rest_port: int,
                 secrets: dict[str, str], etcd_address: str, *, max_connections: int = 40,
                 synchronous: bool = True, start_deadline_s: float = 60.0):
        super().__init__(name, run_dir, port, secrets, max_connections=max_connections,
                         start_deadline_s=start_deadline_s)
        self.stop_timeout_s = 20.0
        self.rest_port = rest_port
        self.etcd_address = etcd_address
        self.synchronous = synchronous

    # -- what the lab writes and launches ------------------------------------------------
    @property
    def conf_path(self) -> Path:
        return self.dir / "patroni.yml"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def own_ports(self) -> list[int]:
        return [self.port, self.rest_port]

    def config(self) -> dict[str, Any]:
        return render_config(self.name, port=self.port, rest_port=self.rest_port,
                             etcd_address=self.etcd_address, data_dir=self.data,
                             bin_dir=str(Path(binaries.find("postgres")).parent),
                             secrets=self.secrets, max_connections=self.max_connections,
                             synchronous=self.synchronous, pgpass=self.dir / "pgpass")

    def prepare(self) -> None:
        self._prepare_dir()
        self.conf_path.write_text(
            "# rendered by the lab from its topology; Patroni's documentation: YAML settings\n"
            + yaml.safe_dump(self.config(), sort_keys=False))
        self.conf_path.chmod(0o600)  # it holds the passwords
        _own(self.conf_path, self.user)

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "patroni", str(self.conf_path)]

    def launch_options(self) -> dict[str, object]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["HOME"] = str(self.dir)  # the agent's user may have no home of its own
        return {"user": self.user, "cwd": str(self.dir), "env": env}

    def extra_state(self) -> dict[str, object]:
        return {"rest_port": self.rest_port, "data_dir": str(self.data)}

    # -- what the node says ----------------------------------------------------------------
    def _get(self, path: str, timeout: float = 1.0) -> httpx.Response:
        return httpx.get(self.rest_url + path, timeout=timeout)

    def check(self, path: str) -> bool:
        """Patroni's REST health checks: /health (Postgres runs), /primary (this node holds
        the leader key and runs as primary), /replica, /sync (the synchronous standby)."""
        try:
            return self._get(path).status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> bool:
        return self.check("/health")

    def node_state(self) -> dict[str, Any]:
        """Patroni's view of this node: role, state, timeline (empty when it does not answer)."""
        try:
            data = self._get("/patroni").json()
        except (httpx.HTTPError, ValueError):
            return {}
        return {"role": data.get("role"), "state": data.get("state"),
                "timeline": data.get("timeline")}

    @property
    def role(self) -> str:
        """'primary' or 'standby', as Patroni reports it ('down' when the agent is gone)."""
        role = self.node_state().get("role")
        if role is None:
            return "down"
        return "primary" if role in ("primary", "master") else "standby"

    def postmaster(self) -> ProcessRecord | None:
        return postmaster_record(self.name, self.data, str(self.log_path))

    # -- faults and the stop ---------------------------------------------------------------
    def crash_postgres(self) -> bool:
        """SIGKILL the postmaster (and so its backends); the agent lives and restarts it."""
        rec = self.postmaster()
        return bool(rec and rec.send(signal.SIGKILL))

    def lose(self) -> None:
        """The node's machine dies: its agent and its Postgres end at once, with no goodbye
        (the leader key stays in etcd until its TTL runs out)."""
        pm = self.postmaster()
        if self.proc and self.proc.record:
            self.proc.record.send(signal.SIGKILL)
        if pm is not None:  # the postmaster's group: it and its backends
            pm.send(signal.SIGKILL)
            pm.wait_gone(5.0)
        if self.proc and self.proc.popen is not None:
            try:
                self.proc.popen.wait(5.0)
            except subprocess.TimeoutExpired:
                pass

    def stop(self) -> str:
        """The agent first (it stops its Postgres); then any Postgres it left behind."""
        how = super().stop()
        pm = self.postmaster()
        if pm is not None:
            how += f"; postgres {pm.stop(stop_signal=signal.SIGINT, timeout=5.0)}"
        return how


def stop_leftover_postmaster(name: str, comp: dict[str, Any]) -> str | None:
    """For `stackctl down` from lab.json alone: stop the Postgres of a node whose agent is gone."""
    data_dir = comp.get("data_dir")
    if not data_dir:
        return None
    rec = postmaster_record(name, Path(data_dir), "")
    return rec.stop(stop_signal=signal.SIGINT, timeout=5.0) if rec else None


def patronictl(conf_path: Path, *args: str, timeout: float = 20.0) -> str:
    """`patronictl -c patroni.yml ARGS`: its output, or its error with the command named."""
    exe = Path(sys.executable).parent / "patronictl"
    res = subprocess.run([str(exe), "-c", str(conf_path), *args], capture_output=True,
                         text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        from stack.errors import StackError
        raise StackError(f"patronictl {' '.join(args)} failed: "
                         f"{(res.stderr or res.stdout).strip()}")
    return res.stdout
