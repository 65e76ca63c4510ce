"""An API replica: the FastAPI app under uvicorn, with its settings rendered from the topology."""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import httpx

from stack.components.base import Component
from stack.topology import ApiSpec


class ApiReplica(Component):
    """One uvicorn process serving the app on a public port and an admin port. Ready when
    GET /readyz answers 200: model loaded and database reachable."""

    kind = "api"
    stop_order = 1  # after nginx stopped sending to it
    stop_signal = signal.SIGTERM  # uvicorn: stop accepting, drain in-flight, shut down

    def __init__(self, name: str, run_dir: Path, port: int, admin_port: int, *, spec: ApiSpec,
                 db_conninfo: str, admin_token: str, model_dir: Path,
                 redis_url: str | None = None, model_version: str | None = None):
        super().__init__(name, run_dir, port, start_deadline_s=spec.start_deadline_s,
                         stop_timeout_s=spec.graceful_timeout_s + 2)
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

    @property
    def url(self) -> str:
        return self.address

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def settings_path(self) -> Path:
        return self.dir / "settings.json"

    def write_settings(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.settings_path.write_text(json.dumps(self.settings, indent=2))
        self.settings_path.chmod(0o600)  # it holds the admin token and the database password
        return self.settings_path

    def own_ports(self) -> list[int]:
        return [self.port, self.admin_port]

    def prepare(self) -> None:
        self.write_settings()

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "stack.api.serve", "--settings", str(self.settings_path)]

    def launch_options(self) -> dict[str, object]:
        return {"env": {**os.environ, "STACK_API_SETTINGS": str(self.settings_path),
                        "PYTHONUNBUFFERED": "1"}}

    def extra_state(self) -> dict[str, object]:
        return {"admin_url": self.admin_url, "admin_port": self.admin_port}

    def ready(self, timeout: float = 1.0) -> bool:
        """GET /readyz answers 200: model loaded and database reachable."""
        try:
            return httpx.get(self.url + "/readyz", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def admin(self, method: str, path: str, **kw) -> httpx.Response:
        """Call an admin route with the lab's token (admin routes never go through nginx)."""
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        return httpx.request(method, self.admin_url + path, headers=headers,
                             timeout=kw.pop("timeout", 30.0), **kw)
