"""The uptime probe as a blackbox exporter gives it: each scrape of /metrics performs one GET
against the public entry and reports what a user would have seen.

    python -m stack.components.probe_exporter --target http://127.0.0.1:8080/health --port 9115

Metrics: ``probe_success`` (1 when the answer was a 2xx within the timeout),
``probe_duration_seconds`` and ``probe_http_status_code`` (0 when no answer came). Prometheus
supplies the clock: one scrape, one probe.
"""
from __future__ import annotations

import argparse
import http.client
import logging
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


from stack.components.base import HttpService

log = logging.getLogger(__name__)


def probe(target: str, timeout: float) -> tuple[int, int, float]:
    """One GET: (success 0/1, HTTP status or 0, seconds taken)."""
    t0 = time.perf_counter()
    status = 0
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:  # noqa: S310 (loopback)
            resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:  # a 4xx/5xx answer is still an answer
        status = exc.code
    except (OSError, http.client.HTTPException):  # refused, timed out, reset, garbage
        status = 0
    took = time.perf_counter() - t0
    return (1 if 200 <= status < 300 else 0), status, took


def render_metrics(success: int, status: int, duration_s: float) -> str:
    return "".join([
        "# HELP probe_success Whether the probe got a 2xx answer in time.\n",
        "# TYPE probe_success gauge\n",
        f"probe_success {success}\n",
        "# HELP probe_duration_seconds How long the probe took.\n",
        "# TYPE probe_duration_seconds gauge\n",
        f"probe_duration_seconds {duration_s:.6f}\n",
        "# HELP probe_http_status_code The HTTP status of the answer (0: none).\n",
        "# TYPE probe_http_status_code gauge\n",
        f"probe_http_status_code {status}\n",
    ])


def make_server(port: int, target: str, timeout: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] == "/metrics":
                body = render_metrics(*probe(target, timeout)).encode()
                ctype = "text/plain; version=0.0.4; charset=utf-8"
                code = 200
            elif self.path == "/-/healthy":
                body, ctype, code = b"ok\n", "text/plain", 200
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: object) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


class ProbeExporter(HttpService):
    """The probe exporter process, in the lab's run directory. Ready when GET /-/healthy
    answers 200 (that does not probe the target)."""

    kind = "probe"
    ready_path = "/-/healthy"

    def __init__(self, name: str, run_dir: Path, port: int, target: str,
                 timeout_s: float = 0.8, start_deadline_s: float = 10.0):
        super().__init__(name, run_dir, port, start_deadline_s)
        self.target = target
        self.timeout_s = timeout_s

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "stack.components.probe_exporter", "--target",
                self.target, "--port", str(self.port), "--timeout", str(self.timeout_s)]

    def launch_options(self) -> dict[str, object]:
        return {"cwd": Path(__file__).resolve().parents[2]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stack.components.probe_exporter", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, help="URL to GET on every scrape")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=0.8, help="seconds (default 0.8)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = make_server(args.port, args.target, args.timeout)
    log.info("probing %s on every scrape of http://127.0.0.1:%d/metrics", args.target,
             args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
