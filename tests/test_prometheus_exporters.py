"""The exporters Prometheus scrapes, each against the real server it watches; the probe
exporter (the real blackbox exporter) and the webhook receiver as processes."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import httpx
import pytest

from stack.runtime import ports
from stack.analysis.notifications import read_notifications
from stack.components.alerting import WebhookReceiver
from stack.components.exporters import NginxExporter, PostgresExporter, RedisExporter
from stack.components.probe_exporter import ProbeExporter


@pytest.fixture
def started():
    """Components a test starts, stopped newest first also when it fails."""
    comps: list = []
    try:
        yield comps
    finally:
        for comp in reversed(comps):
            comp.stop()


def _start(started: list, comp):
    started.append(comp)
    comp.start()
    comp.wait_ready()
    return comp


def _metric(text: str, prefix: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(prefix)]


@pytest.mark.integration
def test_probe_exporter_probes_on_each_scrape(tmp_path: Path, started: list):
    dead = f"http://127.0.0.1:{ports.free_port()}/health"
    probe = _start(started, ProbeExporter("probe", tmp_path, ports.free_port(), dead, 0.3,
                                          scrape_timeout_s=1.0))
    assert (probe.dir / "blackbox.yml").exists()
    text = httpx.get(probe.probe_url, timeout=3).text
    assert _metric(text, "probe_success ") == ["probe_success 0"]
    assert _metric(text, "probe_http_status_code ") == ["probe_http_status_code 0"]
    # a target that answers: the probe exporter's own health page
    ok = _start(started, ProbeExporter("probe2", tmp_path, ports.free_port(),
                                       probe.address + "/-/healthy", 0.5))
    text = httpx.get(ok.probe_url, timeout=3).text
    assert _metric(text, "probe_success ") == ["probe_success 1"]
    assert _metric(text, "probe_http_status_code ") == ["probe_http_status_code 200"]


@pytest.mark.integration
def test_webhook_receiver_records_notifications(tmp_path: Path, started: list):
    hook = _start(started, WebhookReceiver("webhook", tmp_path, ports.free_port()))
    payload = {"status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "X", "severity": "page"},
         "startsAt": "2024-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
         "fingerprint": "abc"}]}
    assert httpx.post(hook.url, json=payload, timeout=3).status_code == 200
    df = read_notifications(tmp_path)
    assert df[["status", "alertname", "severity"]].values.tolist() == [["firing", "X", "page"]]
    assert df["received"].iloc[0] > 0
    assert read_notifications(tmp_path / "nowhere").empty


@pytest.mark.integration
def test_redis_exporter(tmp_path: Path, started: list):
    from stack.components.redis_server import RedisServer
    from stack.topology import RedisSpec

    redis = _start(started, RedisServer("redis", tmp_path, ports.free_port(), RedisSpec()))
    exp = _start(started, RedisExporter("redis-exporter", tmp_path, ports.free_port(),
                                        redis.address))
    assert _metric(httpx.get(exp.address + "/metrics").text, "redis_up ") == ["redis_up 1"]


@pytest.mark.integration
def test_nginx_exporter(tmp_path: Path, started: list):
    from stack.components.nginx import NginxServer
    from stack.topology import NginxSpec

    tmp_path.chmod(0o755)
    nginx = _start(started, NginxServer("nginx", tmp_path, ports.free_port(), ports.free_port(),
                                        [("api1", ports.free_port())], NginxSpec()))
    exp = _start(started, NginxExporter.for_nginx("nginx-exporter", tmp_path,
                                                  ports.free_port(), nginx))
    text = httpx.get(exp.address + "/metrics").text
    assert _metric(text, "nginx_up ") == ["nginx_up 1"]
    assert _metric(text, "nginx_connections_active ")


@pytest.mark.integration
@pytest.mark.slow
def test_postgres_exporter(runs_root: Path, started: list):
    from stack.components.postgres import API_ROLE, BATCH_ROLE, REPLICATION_ROLE, SUPERUSER, PostgresServer

    run_dir = runs_root / f"pg-exporter-{os.getpid()}"
    run_dir.mkdir(mode=0o755)
    secrets_ = {r: secrets.token_urlsafe(18)
                for r in (SUPERUSER, API_ROLE, REPLICATION_ROLE, BATCH_ROLE)}
    pg = PostgresServer("postgres", run_dir, ports.free_port(), secrets_)
    started.append(pg)
    pg.init_primary()
    pg.start()
    pg.wait_ready()
    exp = _start(started, PostgresExporter("postgres-exporter", run_dir, ports.free_port(),
                                           pg.port, secrets_[SUPERUSER]))
    text = httpx.get(exp.address + "/metrics", timeout=5).text
    assert _metric(text, "pg_up ") == ["pg_up 1"]
    assert _metric(text, 'pg_stat_activity_count{datname="postgres"')
    # the password stays out of argv (ps shows it) and out of the log
    assert secrets_[SUPERUSER] not in " ".join(exp.proc.argv)
    assert secrets_[SUPERUSER] not in (exp.dir / "server.log").read_text()
