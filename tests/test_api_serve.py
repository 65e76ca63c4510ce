"""serve: two sockets, admin only on the admin port, graceful exit on SIGTERM."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from stack.api.serve import bind_socket
from stack.model.train import train

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bind_socket_refuses_a_taken_port():
    taken = bind_socket("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            bind_socket("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


@pytest.mark.slow
def test_serve_two_ports_and_sigterm(tmp_path):
    train(tmp_path / "models", n_customers=200, n_txns=3000)
    port, admin_port = _free_port(), _free_port()
    settings = tmp_path / "api1.json"
    settings.write_text(json.dumps({
        "name": "api1", "port": port, "admin_port": admin_port, "admin_token": "tok",
        "db_conninfo": "host=127.0.0.1 port=1 dbname=fraud user=app connect_timeout=1",
        "model_dir": str(tmp_path / "models")}))
    log = (tmp_path / "api1.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "stack.api.serve", "--settings", str(settings)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "api1.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "api1.log").read_text()
            time.sleep(0.1)
        auth = {"Authorization": "Bearer tok"}
        public = httpx.get(f"http://127.0.0.1:{port}/admin/faults", headers=auth)
        admin = httpx.get(f"http://127.0.0.1:{admin_port}/admin/faults", headers=auth)
        assert public.status_code == 404
        assert admin.status_code == 200 and admin.headers["x-backend"] == "api1"
        proc.send_signal(signal.SIGTERM)
        # uvicorn drains, runs the shutdown, then re-raises SIGTERM: the exit is -SIGTERM.
        assert proc.wait(timeout=15) in (0, -signal.SIGTERM)
        assert "api1 stopped" in (tmp_path / "api1.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
