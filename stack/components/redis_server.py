"""Redis: the API's feature cache, a redis-server with its config rendered from the topology.

It is a cache, not a store: no snapshots, no append-only file, and when it is full it evicts
the least recently used keys. Losing it costs latency, never data.
"""
from __future__ import annotations

import signal
from pathlib import Path

import redis

from stack.runtime import binaries, ports
from stack.errors import ComponentFailed
from stack.runtime.processes import ManagedProcess
from stack.topology import RedisSpec


def render_config(port: int, data_dir: Path, spec: RedisSpec) -> str:
    """redis.conf for one cache on loopback (a pure function of its arguments)."""
    return "\n".join([
        "# rendered by the lab from its topology",
        "bind 127.0.0.1",
        f"port {port}",
        "protected-mode yes",
        # a cache: nothing is persisted, a restart starts empty
        'save ""',
        "appendonly no",
        f"maxmemory {spec.maxmemory_mb}mb",
        "maxmemory-policy allkeys-lru",
        f'dir "{data_dir}"',
        "daemonize no",
        'logfile ""',  # stdout, which the ManagedProcess appends to server.log
        "",
    ])


class RedisServer:
    """One redis-server in the lab's run directory."""

    kind = "redis"

    def __init__(self, name: str, run_dir: Path, port: int, spec: RedisSpec):
        self.name = name
        self.dir = Path(run_dir) / name
        self.port = port
        self.spec = spec
        self.proc: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def conf_path(self) -> Path:
        return self.dir / "redis.conf"

    def client(self, timeout: float | None = None) -> redis.Redis:
        t = self.spec.ping_timeout_s if timeout is None else timeout
        return redis.Redis(host="127.0.0.1", port=self.port, db=0, socket_timeout=t,
                           socket_connect_timeout=t)

    def start(self) -> ManagedProcess:
        if ports.is_listening(self.port):
            raise ComponentFailed(self.name, f"port {self.port} is already in use: stop what "
                                  "listens there or pick another port")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(render_config(self.port, self.dir, self.spec))
        self.proc = ManagedProcess(
            self.name, [binaries.find("redis-server"), str(self.conf_path)],
            self.dir / "server.log",
            stop_signal=signal.SIGTERM,  # redis shuts down cleanly on SIGTERM
            stop_timeout=self.spec.stop_timeout_s)
        self.proc.start()
        return self.proc

    def ready(self) -> bool:
        """PING answers PONG."""
        try:
            with self.client() as conn:
                return conn.ping() is True
        except redis.RedisError:
            return False

    def wait_ready(self) -> float:
        assert self.proc is not None
        return self.proc.wait_ready(self.ready, self.spec.start_deadline_s)

    def stop(self) -> str:
        return self.proc.stop() if self.proc else "not started"
