"""Redis: the API's feature cache, a redis-server with its config rendered from the topology.

It is a cache, not a store: no snapshots, no append-only file, and when it is full it evicts
the least recently used keys. Losing it costs latency, never data.
"""
from __future__ import annotations

import signal
from pathlib import Path

import redis

from stack.runtime import binaries
from stack.components.base import Component
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


class RedisServer(Component):
    """One redis-server in the lab's run directory."""

    kind = "redis"
    stop_order = 3  # after the replicas that use it
    stop_signal = signal.SIGTERM  # redis shuts down cleanly on SIGTERM

    def __init__(self, name: str, run_dir: Path, port: int, spec: RedisSpec):
        super().__init__(name, run_dir, port, start_deadline_s=spec.start_deadline_s,
                         stop_timeout_s=spec.stop_timeout_s)
        self.spec = spec

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

    def prepare(self) -> None:
        super().prepare()
        self.conf_path.write_text(render_config(self.port, self.dir, self.spec))

    def argv(self) -> list[str]:
        return [binaries.find("redis-server"), str(self.conf_path)]

    def ready(self) -> bool:
        """PING answers PONG."""
        try:
            with self.client() as conn:
                return conn.ping() is True
        except redis.RedisError:
            return False

