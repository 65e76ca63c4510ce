"""Run one API replica: `python -m stack.api.serve [--settings PATH]`.

Two listening sockets: the public port and the admin port. uvicorn stops gracefully on
SIGTERM/SIGINT: it stops accepting, drains in-flight requests (up to 10 s), then runs the
app's shutdown.
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys

import uvicorn

from stack.api.app import create_app
from stack.api.settings import SETTINGS_ENV, ApiSettings, load_settings
from stack.errors import StackError
from stack.topology import API_KEEP_ALIVE_S

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 10
BACKLOG = 2048


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket with SO_REUSEADDR.

    The protocol is named (IPPROTO_TCP, not 0) because asyncio sets TCP_NODELAY only on
    sockets that say they are TCP; without it, a keep-alive response's body waits for the
    client's delayed ACK, about 40 ms per request."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def serve(settings: ApiSettings) -> None:
    """Serve until SIGTERM/SIGINT."""
    sockets = [bind_socket(settings.host, settings.port),
               bind_socket(settings.host, settings.admin_port)]
    config = uvicorn.Config(create_app(settings), log_level="info", access_log=False,
                            loop="uvloop", http="httptools",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, lifespan="on",
                            timeout_keep_alive=API_KEEP_ALIVE_S)
    log.info("%s listening on %s:%d (admin %d)", settings.name, settings.host, settings.port,
             settings.admin_port)
    try:
        uvicorn.Server(config).run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.api.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default=None,
                        help=f"settings JSON file (default: ${SETTINGS_ENV})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.settings)
        serve(settings)
    except (StackError, OSError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
