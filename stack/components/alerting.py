"""Alertmanager and the webhook receiver that stands in for the pager.

Alertmanager routes every alert to one webhook with waits short enough for compressed time;
the receiver appends every alert of every notification to ``notifications.jsonl`` in its
folder, with the wall time it arrived, so the course can measure "errors began -> page".

    python -m stack.components.alerting receiver --port 9099 --out RUN_DIR/webhook/notifications.jsonl
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from stack.runtime import binaries
from stack.analysis.notifications import NOTIFICATIONS, notification_rows
from stack.components.base import HttpService
from stack.analysis.slo import prom_duration

log = logging.getLogger(__name__)

def render_config(webhook_url: str, group_wait_s: float = 1.0, group_interval_s: float = 1.0,
                  repeat_interval_s: float = 300.0) -> str:
    """alertmanager.yml: every alert to the webhook, resolved ones too (a pure function)."""
    cfg = {
        "route": {
            "receiver": "webhook",
            "group_by": ["alertname", "severity"],
            "group_wait": prom_duration(group_wait_s),
            "group_interval": prom_duration(group_interval_s),
            "repeat_interval": prom_duration(repeat_interval_s),
        },
        "receivers": [{"name": "webhook", "webhook_configs": [
            {"url": webhook_url, "send_resolved": True, "max_alerts": 0}]}],
    }
    return "# rendered by the lab from its topology\n" + yaml.safe_dump(cfg, sort_keys=False)


class Alertmanager(HttpService):
    """prometheus-alertmanager in the lab's run directory, clustering off."""

    kind = "alertmanager"
    ready_path = "/-/ready"

    def __init__(self, name: str, run_dir: Path, port: int, webhook_url: str, *,
                 group_wait_s: float = 1.0, group_interval_s: float = 1.0,
                 repeat_interval_s: float = 300.0, start_deadline_s: float = 15.0):
        super().__init__(name, run_dir, port, start_deadline_s)
        self.webhook_url = webhook_url
        self.timing = (group_wait_s, group_interval_s, repeat_interval_s)

    @classmethod
    def from_spec(cls, name: str, run_dir: Path, port: int, webhook_url: str,
                  spec: object) -> "Alertmanager":
        return cls(name, run_dir, port, webhook_url,
                   group_wait_s=spec.alert_group_wait_s,  # type: ignore[attr-defined]
                   group_interval_s=spec.alert_group_interval_s,  # type: ignore[attr-defined]
                   repeat_interval_s=spec.alert_repeat_interval_s,  # type: ignore[attr-defined]
                   start_deadline_s=spec.start_deadline_s)  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        return self.address

    @property
    def conf_path(self) -> Path:
        return self.dir / "alertmanager.yml"

    def render(self) -> str:
        return render_config(self.webhook_url, *self.timing)

    def prepare(self) -> None:
        super().prepare()
        self.conf_path.write_text(self.render())

    def argv(self) -> list[str]:
        return [binaries.find("prometheus-alertmanager"), f"--config.file={self.conf_path}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # empty: no gossip port, a single instance
                "--log.level=warn"]


# -- the webhook receiver -----------------------------------------------------------------------
def make_receiver(port: int, out: Path) -> ThreadingHTTPServer:
    lock = threading.Lock()
    out = Path(out)

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, body: bytes = b"ok\n") -> None:
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            self._reply(200)

        def do_POST(self) -> None:  # noqa: N802
            received = time.time()
            length = int(self.headers.get("Content-Length") or 0)
            try:
                payload = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._reply(400, b"not JSON\n")
                return
            rows = notification_rows(payload, received)
            with lock, open(out, "a", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row) + "\n")
            log.info("notification: %s", ", ".join(f"{r['alertname']} {r['status']}"
                                                   for r in rows))
            self._reply(200)

        def log_message(self, fmt: str, *args: object) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


class WebhookReceiver(HttpService):
    """The pager stand-in: records every notification as JSON lines in its folder."""

    kind = "webhook"

    def __init__(self, name: str, run_dir: Path, port: int, start_deadline_s: float = 10.0):
        super().__init__(name, run_dir, port, start_deadline_s)

    @property
    def url(self) -> str:
        """What Alertmanager posts to."""
        return self.address + "/alerts"

    @property
    def out_path(self) -> Path:
        return self.dir / NOTIFICATIONS

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "stack.components.alerting", "receiver", "--port",
                str(self.port), "--out", str(self.out_path)]

    def launch_options(self) -> dict[str, object]:
        return {"cwd": Path(__file__).resolve().parents[2]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stack.components.alerting")
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("receiver", help="record Alertmanager webhook notifications")
    rec.add_argument("--port", type=int, required=True)
    rec.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server = make_receiver(args.port, args.out)
    log.info("recording notifications on http://127.0.0.1:%d to %s", args.port, args.out)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
