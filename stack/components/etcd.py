"""etcd: the consistent store that holds Patroni's leader lock.

The lab runs one member, on loopback ports picked free at start; production runs three (or
five) on separate machines, so that losing one keeps a majority and the lock stays decidable.
"""
from __future__ import annotations

import signal
from pathlib import Path

import httpx

from stack.components.base import Component
from stack.runtime import binaries

CLUSTER_TOKEN = "uptime-lab"
HEARTBEAT_MS = 500


class EtcdServer(Component):
    """One etcd member in the lab's run directory."""

    kind = "etcd"
    stop_order = 6  # after the Patroni agents, which hold their leader key in it
    stop_signal = signal.SIGTERM

    def __init__(self, name: str, run_dir: Path, port: int, peer_port: int, *,
                 start_deadline_s: float = 15.0):
        super().__init__(name, run_dir, port, start_deadline_s=start_deadline_s)
        self.peer_port = peer_port

    def own_ports(self) -> list[int]:
        return [self.port, self.peer_port]

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def argv(self) -> list[str]:
        return [binaries.find("etcd"),
                "--name", self.name,
                "--data-dir", str(self.dir / "data"),
                "--listen-client-urls", self.address,
                "--advertise-client-urls", self.address,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", f"{self.name}={self.peer_url}",
                "--initial-cluster-state", "new",
                "--initial-cluster-token", CLUSTER_TOKEN,
                # one member has no followers to heartbeat: a slower raft tick saves CPU and
                # is still far inside Patroni's leader-key TTL
                "--heartbeat-interval", str(HEARTBEAT_MS),
                "--election-timeout", str(10 * HEARTBEAT_MS),
                "--logger", "zap", "--log-level", "warn"]

    def ready(self) -> bool:
        """/health says {"health": "true"}: the member has a leader and serves reads."""
        try:
            r = httpx.get(self.address + "/health", timeout=1.0)
            return r.status_code == 200 and r.json().get("health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    def extra_state(self) -> dict[str, object]:
        return {"peer_port": self.peer_port}
