"""The Debian exporters that let Prometheus see nginx, Postgres and Redis.

- prometheus-nginx-exporter (0.11) reads nginx's stub_status page (``-nginx.scrape-uri``);
- prometheus-postgres-exporter (0.11) connects with ``DATA_SOURCE_NAME`` (the lab's superuser,
  database postgres) and exports pg_up, pg_stat_activity_count, pg_stat_database_*, ...;
- prometheus-redis-exporter (1.45) connects to ``-redis.addr``.

Each listens on 127.0.0.1 only and is ready when its /metrics answers 200. Start each after
the server it watches is ready: the nginx exporter gives up at start if nginx does not answer.
"""
from __future__ import annotations

import os
from pathlib import Path


from stack.components.base import HttpService
from stack.runtime import binaries


class _Exporter(HttpService):
    """What the three exporters share: one process, ready when /metrics answers 200."""

    kind = "exporter"
    binary = ""
    ready_path = "/metrics"

    @property
    def target(self) -> str:
        """What Prometheus scrapes."""
        return f"127.0.0.1:{self.port}"

    def flags(self) -> list[str]:  # pragma: no cover - each exporter says
        raise NotImplementedError

    def argv(self) -> list[str]:
        return [binaries.find(self.binary), *self.flags()]


class NginxExporter(_Exporter):
    """prometheus-nginx-exporter reading http://127.0.0.1:STATUS_PORT/nginx_status."""

    kind = "nginx-exporter"
    binary = "prometheus-nginx-exporter"

    def __init__(self, name: str, run_dir: Path, port: int, scrape_uri: str,
                 start_deadline_s: float = 15.0):
        super().__init__(name, run_dir, port, start_deadline_s, stop_timeout_s=3.0)
        self.scrape_uri = scrape_uri

    @classmethod
    def for_nginx(cls, name: str, run_dir: Path, port: int, nginx: object) -> "NginxExporter":
        from stack.components.nginx import STATUS_PATH

        return cls(name, run_dir, port, nginx.status_url + STATUS_PATH)  # type: ignore[attr-defined]

    def flags(self) -> list[str]:
        # Go's flag package: single-dash flags. Retries let it start while nginx settles.
        return [f"-nginx.scrape-uri={self.scrape_uri}",
                f"-web.listen-address=127.0.0.1:{self.port}",
                "-nginx.retries=5", "-nginx.retry-interval=500ms", "-nginx.timeout=2s"]


class PostgresExporter(_Exporter):
    """prometheus-postgres-exporter, connected as the lab's superuser to database postgres."""

    kind = "postgres-exporter"
    binary = "prometheus-postgres-exporter"

    def __init__(self, name: str, run_dir: Path, port: int, pg_port: int, password: str,
                 user: str = "lab", dbname: str = "postgres", start_deadline_s: float = 15.0):
        super().__init__(name, run_dir, port, start_deadline_s, stop_timeout_s=3.0)
        self.pg_port, self.password, self.user, self.dbname = pg_port, password, user, dbname

    @property
    def dsn(self) -> str:
        """libpq key/value conninfo (lib/pq understands it; no URL quoting of the password)."""
        return (f"host=127.0.0.1 port={self.pg_port} user={self.user} "
                f"password={self.password} dbname={self.dbname} sslmode=disable "
                "connect_timeout=2")

    def launch_options(self) -> dict[str, object]:
        # the password goes through the environment, never the command line (ps shows argv)
        return {"env": {**os.environ, "DATA_SOURCE_NAME": self.dsn}}

    def flags(self) -> list[str]:
        return [f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]


class RedisExporter(_Exporter):
    """prometheus-redis-exporter for the cache."""

    kind = "redis-exporter"
    binary = "prometheus-redis-exporter"

    def __init__(self, name: str, run_dir: Path, port: int, redis_addr: str,
                 start_deadline_s: float = 15.0):
        super().__init__(name, run_dir, port, start_deadline_s, stop_timeout_s=3.0)
        self.redis_addr = redis_addr

    def flags(self) -> list[str]:
        return [f"-redis.addr={self.redis_addr}", f"-web.listen-address=127.0.0.1:{self.port}",
                "-connection-timeout=2s"]
