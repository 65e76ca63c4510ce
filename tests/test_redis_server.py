"""The Redis cache: its rendered config, and a real redis-server started and stopped."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from stack.runtime import ports
from stack.errors import ComponentFailed
from stack.components.redis_server import RedisServer, render_config
from stack.topology import RedisSpec


def test_config_is_a_loopback_cache(tmp_path: Path):
    text = render_config(6390, tmp_path, RedisSpec(maxmemory_mb=32))
    lines = text.splitlines()
    for expected in ("bind 127.0.0.1", "port 6390", "protected-mode yes", 'save ""',
                     "appendonly no", "maxmemory 32mb", "maxmemory-policy allkeys-lru",
                     f'dir "{tmp_path}"', "daemonize no", 'logfile ""'):
        assert expected in lines


@pytest.fixture
def redis_server(tmp_path: Path):
    """A started redis-server, always stopped afterwards."""
    server = RedisServer("redis", tmp_path, ports.free_port(), RedisSpec(maxmemory_mb=16))
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.integration
def test_start_ready_set_get_stop(redis_server: RedisServer):
    assert not redis_server.ready()
    redis_server.start()
    assert redis_server.wait_ready() < redis_server.spec.start_deadline_s
    assert redis_server.address == f"redis://127.0.0.1:{redis_server.port}/0"
    with redis_server.client() as conn:
        assert conn.set("customer:42", "features")
        assert conn.get("customer:42") == b"features"
        assert conn.config_get("maxmemory")["maxmemory"] == str(16 * 1024 * 1024)
        assert conn.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
        assert conn.config_get("save")["save"] == ""
        assert conn.config_get("bind")["bind"] == "127.0.0.1"
    assert (redis_server.dir / "redis.conf").exists()
    record = redis_server.proc.record
    assert redis_server.stop() == "graceful"  # SIGTERM: redis shuts down cleanly
    assert not record.group_alive()
    assert not ports.is_listening(redis_server.port)
    assert not redis_server.ready()
    assert "ready to accept connections" in (redis_server.dir / "server.log").read_text().lower()


@pytest.mark.integration
def test_refuses_a_taken_port(tmp_path: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = RedisServer("redis", tmp_path, sock.getsockname()[1], RedisSpec())
        with pytest.raises(ComponentFailed, match="already in use"):
            server.start()
    assert server.proc is None
