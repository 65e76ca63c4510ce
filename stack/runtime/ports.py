"""Free loopback ports, picked at start so two labs never collide."""
from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_port(host: str = HOST, taken: set[int] | None = None) -> int:
    """A port that nothing listens on right now (the kernel picks it)."""
    taken = taken if taken is not None else set()
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port
    raise OSError("could not find a free port")


def is_listening(port: int, host: str = HOST, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
