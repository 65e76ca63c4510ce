"""An API replica: the FastAPI app under uvicorn, with its settings rendered from the topology."""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import httpx

from stack.runtime.processes import ManagedProcess
from stack.topology import ApiSpec


class ApiReplica:
    """One uvicorn process serving the app on a public port and an admin port."""

    def __init__(self, name: str, run_dir: Path, port: int, admin_port: int, *, spec: ApiSpec,
                 db_conninfo: str, admin_token: str, model_dir: Path,
                 redis_url: str | None = None, model_version: str | None = None):
        self.name = name
        self.dir = Path(run_dir) / name
        self.port = port
        self.admin_port = admin_port
        self.spec = spec
        self.admin_token = admin_token
        self.settings = {
            "name": name, "host": "127.0.0.1", "port": port, "admin_port": admin_port,
            "admin_token": admin_token, "db_conninfo": db_conninfo,
            "db_pool_min": min(spec.db_pool_min, spec.db_pool_max),
            "db_pool_max": spec.db_pool_max,
            "db_pool_timeout_s": spec.db_pool_timeout_s,
            "db_statement_timeout_ms": spec.db_statement_timeout_ms,
            "redis_url": redis_url, "redis_timeout_s": spec.redis_timeout_s,
            "cache_ttl_s": spec.cache_ttl_s, "model_dir": str(model_dir),
            "model_version": model_version,
            "sentry_dsn": os.environ.get("SENTRY_DSN") or None,
            "sentry_events_dir": str(Path(run_dir) / "sentry"),
            "run_dir": str(run_dir),
        }
        self.proc: ManagedProcess | None = None

    kind = "api"

    @property
    def address(self) -> str:
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def write_settings(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "settings.json"
        path.write_text(json.dumps(self.settings, indent=2))
        path.chmod(0o600)  # it holds the admin token and the database password
        return path

    def start(self) -> ManagedProcess:
        path = self.write_settings()
        env = {**os.environ, "STACK_API_SETTINGS": str(path), "PYTHONUNBUFFERED": "1"}
        self.proc = ManagedProcess(
            self.name, [sys.executable, "-m", "stack.api.serve", "--settings", str(path)],
            self.dir / "server.log", env=env, stop_signal=signal.SIGTERM,
            stop_timeout=self.spec.graceful_timeout_s + 2)
        self.proc.start()
        return self.proc

    def ready(self, timeout: float = 1.0) -> bool:
        """GET /readyz answers 200: model loaded and database reachable."""
        try:
            return httpx.get(self.url + "/readyz", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self) -> float:
        assert self.proc is not None
        return self.proc.wait_ready(self.ready, self.spec.start_deadline_s)

    def admin(self, method: str, path: str, **kw) -> httpx.Response:
        """Call an admin route with the lab's token (admin routes never go through nginx)."""
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        return httpx.request(method, self.admin_url + path, headers=headers,
                             timeout=kw.pop("timeout", 30.0), **kw)

    def stop(self) -> str:
        return self.proc.stop() if self.proc else "not started"
