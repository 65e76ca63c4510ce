"""Blue/green model slots in one replica: stage, activate, rollback, /metrics model_info."""
import threading
import warnings

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stack.api import ApiSettings, create_app
from stack.model.registry import load_verified, set_deployed
from stack.model.train import train
from stack.deploy.gate import make_bad_model

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

DOWN_DB = "host=127.0.0.1 port=1 dbname=fraud user=app connect_timeout=1"
ADMIN = "http://testserver:9001"
AUTH = {"Authorization": "Bearer secret-token"}
SMALL = {"n_customers": 200, "n_txns": 3000}
GOOD = {"customer_id": 5, "amount": 12.5, "merchant_category": "grocery", "country": "GB",
        "hour": 14, "is_online": False}


def _settings(model_dir, **over):
    return ApiSettings(**{"name": "api1", "port": 8001, "admin_port": 9001,
                          "admin_token": "secret-token", "db_conninfo": DOWN_DB,
                          "db_pool_timeout_s": 0.3, "model_dir": str(model_dir), **over})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    src = tmp_path_factory.mktemp("models")
    train(src, version="v1", seed=1, **SMALL)
    train(src, version="v2", seed=2, **SMALL)
    return src


@pytest.fixture
def model_dir(trained, tmp_path):
    import shutil

    shutil.copytree(trained, tmp_path / "models")
    return tmp_path / "models"


@pytest.fixture
def client(model_dir):
    with TestClient(create_app(_settings(model_dir, model_version="v1"))) as c:
        yield c


def _post(client, path, **kw):
    return client.post(f"{ADMIN}/admin/model/{path}", headers=AUTH, **kw)


def _model_info(client) -> dict[tuple[str, str], float]:
    text = client.get(f"{ADMIN}/metrics").text
    return {(s.labels["version"], s.labels["sha256"]): s.value
            for f in text_string_to_metric_families(text) if f.name == "model_info"
            for s in f.samples}


def test_starts_with_one_model_in_the_blue_slot(client):
    slots = client.get(f"{ADMIN}/admin/model", headers=AUTH).json()
    assert slots["active_slot"] == "blue" and slots["active_version"] == "v1"
    assert slots["slots"]["blue"]["state"] == "active"
    assert slots["slots"]["green"] == {"state": "idle", "version": None, "sha256": None,
                                       "loaded_at": None}
    assert slots["previous_slot"] is None


def test_stage_loads_without_serving(client):
    staged = _post(client, "stage", json={"version": "v2"})
    assert staged.status_code == 200
    assert staged.json()["slot"] == "green" and staged.json()["active_version"] == "v1"
    slots = client.get(f"{ADMIN}/admin/model", headers=AUTH).json()
    assert slots["active_version"] == "v1" and slots["slots"]["green"]["version"] == "v2"
    assert [v for v, _ in _model_info(client)] == ["v1"]
    reasons = client.get("/readyz").json()["reasons"]  # the database is down in these tests
    assert not any(r.startswith("model") for r in reasons)


def test_activate_flips_and_metrics_show_only_the_active_version(client, model_dir):
    _post(client, "stage", json={"version": "v2"})
    flipped = _post(client, "activate", json={"version": "v2"})
    assert flipped.status_code == 200
    assert flipped.json() == {"version": "v2", "previous": "v1", "slot": "green", "changed": True}
    info = _model_info(client)
    v2_sha = load_verified(model_dir, "v2").sha256
    assert info == {("v2", v2_sha): 1.0}
    # activating what already serves is a no-op, so a retried deploy is safe
    again = _post(client, "activate", json={"version": "v2"})
    assert again.status_code == 200 and again.json()["changed"] is False


def test_rollback_flips_back_and_forth(client):
    assert _post(client, "rollback").status_code == 409  # nothing served before
    _post(client, "stage", json={"version": "v2"})
    _post(client, "activate", json={"version": "v2"})
    back = _post(client, "rollback")
    assert back.status_code == 200 and back.json() == {"version": "v1", "previous": "v2",
                                                       "slot": "blue"}
    assert [v for v, _ in _model_info(client)] == ["v1"]
    forward = _post(client, "rollback")
    assert forward.json()["version"] == "v2"


def test_activate_needs_the_version_staged(client):
    response = _post(client, "activate", json={"version": "v2"})
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "not_staged" and "POST /admin/model/stage first" in body["detail"]
    assert client.get(f"{ADMIN}/admin/model", headers=AUTH).json()["active_version"] == "v1"


def test_stage_refuses_a_tampered_file_and_keeps_serving(client, model_dir):
    bad = make_bad_model(model_dir, "tampered")
    response = _post(client, "stage", json={"version": bad})
    assert response.status_code == 409
    assert response.json()["error"] == "model_rejected"
    assert "integrity check" in response.json()["detail"]
    slots = client.get(f"{ADMIN}/admin/model", headers=AUTH).json()
    assert slots["active_version"] == "v1" and slots["slots"]["green"]["version"] is None


def test_stage_refuses_unknown_versions_and_bad_bodies(client):
    unknown = _post(client, "stage", json={"version": "v9"})
    assert unknown.status_code == 409 and "known: v1, v2" in unknown.json()["detail"]
    assert _post(client, "stage", json={}).status_code == 422
    assert _post(client, "stage", json={"version": "../v1"}).status_code == 422


def test_blue_green_routes_need_the_admin_port_and_token(client):
    assert client.post(f"{ADMIN}/admin/model/stage", json={"version": "v2"}).status_code == 401
    assert client.post("/admin/model/activate", json={"version": "v2"},
                       headers=AUTH).status_code == 404
    assert client.get("/admin/model", headers=AUTH).status_code == 404


def test_staging_over_the_previous_slot_drops_the_rollback_target(client):
    _post(client, "stage", json={"version": "v2"})
    _post(client, "activate", json={"version": "v2"})  # blue (v1) is now the previous slot
    _post(client, "stage", json={"version": "v2"})      # ... staged over
    assert client.get(f"{ADMIN}/admin/model", headers=AUTH).json()["previous_slot"] is None
    assert _post(client, "rollback").status_code == 409


def test_a_request_finishes_on_the_model_it_started_with(client, monkeypatch):
    """Activate while a /predict holds its snapshot: it answers with the old version, the
    next request with the new one."""
    from stack.api import db, routes_predict

    in_lookup, release = threading.Event(), threading.Event()
    customer = {"customer_id": 5, "home_country": "GB", "account_age_days": 400,
                "avg_amount_30d": 40.0, "txn_count_30d": 20, "chargebacks_1y": 0}

    def slow_lookup(st, customer_id):  # runs after the snapshot, before scoring
        if not release.is_set():
            in_lookup.set()
            release.wait(10)
        return customer

    monkeypatch.setattr(routes_predict, "_customer", slow_lookup)
    monkeypatch.setattr(db, "insert_prediction", lambda *a, **kw: True)
    _post(client, "stage", json={"version": "v2"})
    answers = []
    worker = threading.Thread(target=lambda: answers.append(client.post("/predict", json=GOOD)))
    worker.start()
    assert in_lookup.wait(10)
    assert _post(client, "activate", json={"version": "v2"}).json()["changed"] is True
    release.set()
    worker.join(10)
    assert answers[0].status_code == 200 and answers[0].json()["model_version"] == "v1"
    after = client.post("/predict", json=GOOD)
    assert after.status_code == 200 and after.json()["model_version"] == "v2"


def test_a_restart_loads_the_deployed_version(model_dir):
    set_deployed(model_dir, "v1", previous="v2")
    with TestClient(create_app(_settings(model_dir))) as c:
        assert c.get(f"{ADMIN}/admin/model", headers=AUTH).json()["active_version"] == "v1"
    # an explicit model_version still wins
    with TestClient(create_app(_settings(model_dir, model_version="v2"))) as c:
        assert c.get(f"{ADMIN}/admin/model", headers=AUTH).json()["active_version"] == "v2"


def test_without_a_deployed_pointer_the_latest_loads(model_dir):
    with TestClient(create_app(_settings(model_dir))) as c:
        assert c.get(f"{ADMIN}/admin/model", headers=AUTH).json()["active_version"] == "v2"
