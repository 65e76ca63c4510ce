"""Integration: each fault really happens on the real BEFORE lab, and undo puts it back."""
from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from stack.lab import faults
from stack.errors import ConfigError, UnknownName
from stack.lab.lab import Lab

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TXN = {"customer_id": 7, "amount": 30.0, "merchant_category": "grocery", "country": "US",
       "hour": 12, "is_online": False}


@pytest.fixture(scope="module")
def lab(runs_root: Path, model_dir: Path):
    with Lab("before", runs_root / "faults", model_dir=model_dir) as lab:
        yield lab


@pytest.fixture(autouse=True)
def healthy_after(lab: Lab):
    yield
    deadline = time.monotonic() + 15
    while not lab.apis[0].ready() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert lab.apis[0].ready(), "every test leaves the lab healthy"


def predict(lab: Lab, timeout: float = 5.0) -> httpx.Response:
    return httpx.post(lab.public_url + "/predict", json=TXN, timeout=timeout)


def test_unknown_fault_and_bad_params_are_named(lab: Lab):
    with pytest.raises(UnknownName, match="known: bad_model"):
        faults.apply(lab, "meteor", "api1")
    with pytest.raises(ConfigError, match="no parameter 'colour'"):
        faults.apply(lab, "slow_db", "api1", colour="red")
    with pytest.raises(ConfigError, match="applies to postgres"):
        faults.apply(lab, "connection_exhaustion", "api1")


def test_crash_kills_and_undo_restarts(lab: Lab):
    old_pid = lab.apis[0].proc.pid
    applied = faults.apply(lab, "crash", "api1")
    assert not lab.apis[0].proc.alive()
    with pytest.raises(httpx.ConnectError):
        predict(lab)
    faults.undo(lab, applied)
    assert lab.apis[0].proc.pid != old_pid and predict(lab).status_code == 200


def test_hang_stops_answering_and_undo_resumes(lab: Lab):
    applied = faults.apply(lab, "hang", "api1")
    try:
        with pytest.raises(httpx.TimeoutException):
            predict(lab, timeout=0.5)
    finally:
        faults.undo(lab, applied)
    assert predict(lab).status_code == 200


def test_hang_on_postgres_freezes_its_backends_too(lab: Lab):
    import threading
    with lab.db.connect() as conn:  # a connection open before the hang: its backend stops too
        conn.execute("SELECT 1")
        answered = threading.Event()

        def query() -> None:
            conn.execute("SELECT 1")
            answered.set()

        applied = faults.apply(lab, "hang", "postgres")
        try:
            worker = threading.Thread(target=query, daemon=True)
            worker.start()
            assert not answered.wait(1.0), "a backend kept answering through the hang"
        finally:
            faults.undo(lab, applied)
        assert answered.wait(5.0), "the backend answers again after undo"
    assert predict(lab).status_code == 200


def test_slow_db_is_a_real_slow_query(lab: Lab):
    applied = faults.apply(lab, "slow_db", "api1", delay_ms=1000)
    try:
        t0 = time.monotonic()
        assert predict(lab).status_code == 200
        assert time.monotonic() - t0 >= 1.0
        slow = [0]

        def watch() -> None:
            with lab.db.connect() as conn:
                for _ in range(20):
                    slow[0] += conn.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                            "query LIKE '%pg_sleep%' AND usename = 'api'"
                                            ).fetchone()[0]
                    time.sleep(0.05)

        import threading
        watcher = threading.Thread(target=watch)
        watcher.start()
        predict(lab)
        watcher.join()
        assert slow[0] > 0, "Postgres itself runs the slow query"
    finally:
        faults.undo(lab, applied)
    t0 = time.monotonic()  # undone: no second of pg_sleep any more (room for a slow machine)
    assert predict(lab).status_code == 200 and time.monotonic() - t0 < 1.0


def test_memory_leak_grows_until_the_memory_limit_kills(lab: Lab):
    kills = lab.run_dir / "oom-kills.jsonl"
    before = kills.read_text().count("\n") if kills.exists() else 0
    applied = faults.apply(lab, "memory_leak", "api1", mb_per_request=20)
    try:
        deadline = time.monotonic() + 30
        while lab.apis[0].proc.alive() and time.monotonic() < deadline:
            try:
                predict(lab, timeout=2)
            except httpx.HTTPError:
                pass
        assert not lab.apis[0].proc.alive(), "the watchdog kills the leaking replica"
        event = json.loads(kills.read_text().splitlines()[before])
        assert event["component"] == "api1" and event["rss_mb"] > event["limit_mb"]
    finally:
        faults.undo(lab, applied)
    assert predict(lab).status_code == 200


def test_connection_exhaustion_takes_every_slot(lab: Lab):
    applied = faults.apply(lab, "connection_exhaustion", "postgres", spike_rate=20, query_ms=50)
    try:
        assert applied.state["taken"] > 0
        with pytest.raises(psycopg.OperationalError, match="too many clients|remaining connection"):
            lab.db.connect(user="api")
    finally:
        faults.undo(lab, applied)
    lab.db.connect(user="api").close()
    assert predict(lab).status_code == 200


def test_error_rate(lab: Lab):
    applied = faults.apply(lab, "error_rate", "api1", rate=1.0)
    try:
        r = predict(lab)
        assert r.status_code == 500 and r.json()["error"] == "internal_error"
    finally:
        faults.undo(lab, applied)
    assert predict(lab).status_code == 200


def test_bad_model_takes_the_api_down_and_undo_restores(lab: Lab):
    applied = faults.apply(lab, "bad_model", "api1", kind="truncated")
    try:
        deadline = time.monotonic() + 30
        body = {}
        while time.monotonic() < deadline:
            try:
                r = httpx.get(lab.public_url + "/readyz", timeout=2)
                body = r.json()
                if r.status_code == 503 and any("model" in x for x in body["reasons"]):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert any("model" in x for x in body.get("reasons", [])), body
        assert predict(lab).status_code == 503
    finally:
        faults.undo(lab, applied)
    assert predict(lab).json()["model_version"] == "v1"


def test_restart_is_downtime_while_it_starts(lab: Lab):
    old_pid = lab.apis[0].proc.pid
    applied = faults.apply(lab, "restart", "api1")
    time.sleep(0.3)
    with pytest.raises(httpx.HTTPError):
        predict(lab, timeout=0.5)  # the new process is still importing and loading the model
    faults.undo(lab, applied)
    assert lab.apis[0].proc.pid != old_pid and predict(lab).status_code == 200
