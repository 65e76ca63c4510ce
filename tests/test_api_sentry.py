"""Error reporting through the real sentry-sdk into the local event store."""
import json
import warnings

import pytest
import sentry_sdk

from stack.api import ApiSettings, create_app, read_events
from stack.api.sentry import LocalEventTransport, Reporter
from stack.model.train import train

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

DOWN_DB = "host=127.0.0.1 port=1 dbname=fraud user=app connect_timeout=1"
ADMIN = "http://testserver:9001"
AUTH = {"Authorization": "Bearer secret-token"}
GOOD = {"customer_id": 5, "amount": 12.5, "merchant_category": "grocery", "country": "GB",
        "hour": 14, "is_online": False}


@pytest.fixture(autouse=True)
def _sentry_off_afterwards():
    yield
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
def events_dir(tmp_path):
    return tmp_path / "events"


def _app(tmp_path, events_dir, train_model=True, **over):
    model_dir = tmp_path / "models"
    if train_model:
        train(model_dir, n_customers=200, n_txns=3000)
    settings = ApiSettings(**{
        "name": "api3", "port": 8001, "admin_port": 9001, "admin_token": "secret-token",
        "db_conninfo": DOWN_DB, "db_pool_timeout_s": 0.3, "model_dir": str(model_dir),
        "sentry_events_dir": str(events_dir), **over})
    return create_app(settings)


def test_bad_input_sends_no_event_but_db_errors_do(tmp_path, events_dir):
    with TestClient(_app(tmp_path, events_dir)) as c:
        for body in ("{", json.dumps({**GOOD, "amount": -1}), "[]"):
            c.post("/predict", content=body, headers={"content-type": "application/json"})
        assert read_events(events_dir) == []
        assert c.post("/predict", json=GOOD).status_code == 503
    events = read_events(events_dir)
    assert len(events) == 1
    event = events[0]
    assert event["tags"] == {"cause": "database", "replica": "api3", "model_version": "v1",
                             "route": "/predict"}
    assert event["route"] == "/predict" and event["level"] == "error"
    assert event["exception"][-1]["type"] == "PoolTimeout"
    assert event["event_id"] and event["timestamp"]
    assert (events_dir / "api3.jsonl").is_file()


def test_unhandled_error_is_reported(tmp_path, events_dir):
    with TestClient(_app(tmp_path, events_dir)) as c:
        c.put(f"{ADMIN}/admin/faults", headers=AUTH, json={"error_rate": 1.0})
        assert c.post("/predict", json=GOOD).status_code == 500
    (event,) = read_events(events_dir)
    assert event["tags"]["cause"] == "unhandled"
    assert event["exception"][-1] == {"type": "InjectedFault",
                                      "value": "injected fault (error_rate=1.0)"}


def test_model_load_failure_is_reported(tmp_path, events_dir):
    with TestClient(_app(tmp_path, events_dir, train_model=False)) as c:
        assert c.get("/healthz").status_code == 200
    (event,) = read_events(events_dir)
    assert event["tags"]["cause"] == "model"
    assert event["tags"]["model_version"] == "none"
    assert event["exception"][-1]["type"] == "ModelRejected"


def test_redis_down_falls_back_and_reports_once(tmp_path, events_dir):
    app = _app(tmp_path, events_dir, redis_url="redis://127.0.0.1:1/0")
    with TestClient(app) as c:
        for _ in range(3):
            assert c.post("/predict", json=GOOD).status_code == 503  # reached the database
        metrics = c.get("/metrics").text
    assert 'cache_requests_total{result="error"} 3.0' in metrics
    causes = [e["tags"]["cause"] for e in read_events(events_dir)]
    assert causes.count("cache") == 1
    assert causes.count("database") == 3


def test_reporter_rate_limit():
    now = [100.0]
    sent = []
    reporter = Reporter("api9", lambda: "v1", clock=lambda: now[0])
    transport = LocalEventTransport("unused", "api9")
    transport.capture_envelope = lambda envelope: sent.append(envelope)
    sentry_sdk.init(transport=transport, default_integrations=False)
    error = ConnectionError("redis down")
    assert reporter.report(error, "cache", min_interval_s=10) is not None
    now[0] += 5
    assert reporter.report(error, "cache", min_interval_s=10) is None
    assert reporter.report(error, "database") is not None
    now[0] += 6
    assert reporter.report(error, "cache", min_interval_s=10) is not None
    assert len(sent) == 3


def test_read_events_merges_replicas_in_time_order(tmp_path):
    (tmp_path / "api1.jsonl").write_text(
        json.dumps({"event_id": "b", "timestamp": "2024-01-01T00:00:02Z"}) + "\n")
    (tmp_path / "api2.jsonl").write_text(
        json.dumps({"event_id": "a", "timestamp": "2024-01-01T00:00:01Z"}) + "\n\n"
        + json.dumps({"event_id": "c", "timestamp": "2024-01-01T00:00:03Z"}) + "\n")
    assert [e["event_id"] for e in read_events(tmp_path)] == ["a", "b", "c"]
    assert read_events(tmp_path / "missing") == []
