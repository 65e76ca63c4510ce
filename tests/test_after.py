"""Integration: the AFTER lab (nginx, two replicas, Redis, Postgres primary + synchronous
standby, failover manager) survives what week 2 claims it survives."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from stack.course import week2 as experiments

from stack.components import failover
from stack.lab.lab import Lab, read_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab(runs_root: Path, model_dir: Path):
    with Lab("after", runs_root / "after", model_dir=model_dir) as lab:
        yield lab


def test_after_lab_components_and_replication(lab: Lab):
    state = read_state(lab.run_dir)
    assert {"api1", "api2", "redis", "postgres", "standby", "nginx", "watchdog",
            "failover"} <= set(state["components"])
    assert all(r["ready"] for r in lab.status())
    assert lab.component("standby").role == "standby"
    with lab.db.connect() as conn:
        rows = conn.execute("SELECT application_name, sync_state FROM pg_stat_replication"
                            ).fetchall()
    assert ("standby", "sync") in rows
    backends = {httpx.post(lab.public_url + "/predict", timeout=5, json={
        "customer_id": i, "amount": 10.0, "merchant_category": "fuel", "country": "US",
        "hour": 9, "is_online": False}).headers["x-backend"] for i in range(1, 9)}
    assert backends == {"api1", "api2"}, "nginx spreads requests over both replicas"


def test_cache_bypass_when_redis_is_killed(lab: Lab):
    r = experiments.redis_killed(lab)
    print({k: v for k, v in r.items() if k != "records"})
    assert r["requests_after_kill"] > 100 and r["failed_after_kill"] == 0
    metrics = httpx.get(lab.apis[0].url + "/metrics").text
    assert 'cache_requests_total{result="error"}' in metrics


def test_sync_standby_loss_drops_sync_and_writes_go_on(lab: Lab):
    r = experiments.sync_standby_lost(lab)
    print({k: v for k, v in r.items() if k != "records"})
    assert r["sync_dropped_after_s"] is not None, "the manager drops the sync requirement"
    assert r["p99_after_drop_ms"] < 1000, "writes flow again once it is dropped"


def test_primary_failover_loses_no_acknowledged_prediction(lab: Lab):
    r = experiments.primary_failover(lab)
    print({k: v for k, v in r.items() if k != "records"})
    assert r["acknowledged"] > 100
    assert r["lost"] == 0, "every prediction answered 200 is in the promoted standby"
    assert r["standby_role_now"] == "primary"
    assert r["writes_resumed_after_s"] is not None, "writes resume after the promotion"
    assert [e["action"] for e in failover.read_events(lab.run_dir)].count("promoted") == 1
