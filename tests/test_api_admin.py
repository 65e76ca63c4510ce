"""Admin routes: admin port and bearer token, model reload, fault knobs; a missing model."""
import warnings

import pytest

from stack.api import ApiSettings, create_app
from stack.api.knobs import LEAKED
from stack.model.train import train

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

DOWN_DB = "host=127.0.0.1 port=1 dbname=fraud user=app connect_timeout=1"
ADMIN = "http://testserver:9001"
AUTH = {"Authorization": "Bearer secret-token"}
GOOD = {"customer_id": 5, "amount": 12.5, "merchant_category": "grocery", "country": "GB",
        "hour": 14, "is_online": False}
SMALL = {"n_customers": 200, "n_txns": 3000}


def _settings(model_dir, **over):
    return ApiSettings(**{"name": "api2", "port": 8001, "admin_port": 9001,
                          "admin_token": "secret-token", "db_conninfo": DOWN_DB,
                          "db_pool_timeout_s": 0.3, "model_dir": str(model_dir), **over})


@pytest.fixture
def model_dir(tmp_path):
    train(tmp_path / "models", version="v1", seed=1, **SMALL)
    return tmp_path / "models"


@pytest.fixture
def client(model_dir):
    with TestClient(create_app(_settings(model_dir))) as c:
        yield c


def test_admin_needs_the_token(client):
    assert client.get(f"{ADMIN}/admin/faults").status_code == 401
    wrong = client.get(f"{ADMIN}/admin/faults", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    basic = client.get(f"{ADMIN}/admin/faults", headers={"Authorization": "Basic secret-token"})
    assert basic.status_code == 401
    assert client.get(f"{ADMIN}/admin/faults", headers=AUTH).status_code == 200


def test_admin_port_serves_only_admin_and_probes(client):
    assert client.post(f"{ADMIN}/predict", json=GOOD).status_code == 404
    assert client.get(f"{ADMIN}/healthz").status_code == 200
    assert "http_requests_total" in client.get(f"{ADMIN}/metrics").text


def test_admin_document_is_on_the_admin_port_behind_the_token(client):
    assert client.get(f"{ADMIN}/admin/openapi.json").status_code == 401
    assert client.get("/admin/openapi.json", headers=AUTH).status_code == 404
    assert client.get(f"{ADMIN}/openapi.json", headers=AUTH).status_code == 404
    doc = client.get(f"{ADMIN}/admin/openapi.json", headers=AUTH).json()
    assert set(doc["paths"]) == {
        "/healthz", "/readyz", "/metrics", "/admin/model", "/admin/model/reload",
        "/admin/model/stage", "/admin/model/activate", "/admin/model/rollback", "/admin/faults"}
    assert doc["components"]["securitySchemes"]["adminToken"] == {
        "type": "http", "scheme": "bearer",
        "description": "the lab's admin token (lab.json: admin_token)"}
    faults = doc["paths"]["/admin/faults"]
    assert faults["put"]["security"] == [{"adminToken": []}]
    assert set(faults["put"]["responses"]) == {"200", "401", "413", "422"}
    knobs = doc["components"]["schemas"]["Faults"]
    assert knobs["additionalProperties"] is False
    assert knobs["properties"]["error_rate"]["maximum"] == 1.0


def test_both_methods_of_a_path_are_allowed(client):
    """GET and PUT /admin/faults are two routes; a 405 names both."""
    response = client.delete(f"{ADMIN}/admin/faults", headers=AUTH)
    assert response.status_code == 405 and response.headers["allow"] == "GET, PUT"


def test_reload_swaps_the_model(client, model_dir):
    assert client.post(f"{ADMIN}/admin/model/reload", headers=AUTH, json={}).json()["version"] \
        == "v1"
    train(model_dir, version="v2", seed=2, **SMALL)
    response = client.post(f"{ADMIN}/admin/model/reload", headers=AUTH, json={"version": None})
    assert response.status_code == 200
    assert response.json()["version"] == "v2" and response.json()["previous"] == "v1"
    assert 'model_info{sha256="' in client.get("/metrics").text
    assert 'version="v2"} 1.0' in client.get("/metrics").text
    assert 'version="v1"}' not in client.get("/metrics").text
    response = client.post(f"{ADMIN}/admin/model/reload", headers=AUTH, json={"version": "v1"})
    assert response.json()["version"] == "v1"


def test_rejected_reload_keeps_the_old_model(client, model_dir):
    train(model_dir, version="v2", seed=2, **SMALL)
    (model_dir / "fraud-v2.joblib").write_bytes(b"tampered")
    response = client.post(f"{ADMIN}/admin/model/reload", headers=AUTH, json={"version": "v2"})
    assert response.status_code == 409
    assert response.json()["error"] == "model_rejected"
    assert "fraud-v2.joblib" in response.json()["detail"]
    unknown = client.post(f"{ADMIN}/admin/model/reload", headers=AUTH, json={"version": "v7"})
    assert unknown.status_code == 409 and "v7" in unknown.json()["detail"]
    assert 'version="v1"} 1.0' in client.get("/metrics").text


def test_reload_body_is_validated(client):
    response = client.post(f"{ADMIN}/admin/model/reload", headers=AUTH,
                           json={"version": "../../etc"})
    assert response.status_code == 422
    response = client.post(f"{ADMIN}/admin/model/reload", headers=AUTH, json={"versoin": "v1"})
    assert response.status_code == 422


def test_faults_put_replaces_all_knobs(client):
    url = f"{ADMIN}/admin/faults"
    assert client.get(url, headers=AUTH).json() == {
        "db_delay_ms": 0, "leak_mb_per_request": 0, "error_rate": 0.0, "leaked_mb": 0}
    client.put(url, headers=AUTH, json={"db_delay_ms": 250, "error_rate": 0.5})
    client.put(url, headers=AUTH, json={"db_delay_ms": 100})
    body = client.get(url, headers=AUTH).json()
    assert (body["db_delay_ms"], body["error_rate"]) == (100, 0.0)
    # 2.0 is an integer in JSON Schema (the lab's faults send floats)
    assert client.put(url, headers=AUTH, json={"leak_mb_per_request": 0.0,
                                               "db_delay_ms": 2.0}).json()["db_delay_ms"] == 2


@pytest.mark.parametrize("knobs, field", [
    ({"db_delay_ms": -1}, "db_delay_ms"),
    ({"error_rate": 1.5}, "error_rate"),
    ({"leak_mb_per_request": "lots"}, "leak_mb_per_request"),
    ({"leak_mb_per_request": "5"}, "leak_mb_per_request"),  # a string is not an integer
    ({"error_rate": True}, "error_rate"),
    ({"db_delay_ms": 2.5}, "db_delay_ms"),
    ({"cpu_burn": 1}, "cpu_burn"),
])
def test_bad_faults_are_422(client, knobs, field):
    response = client.put(f"{ADMIN}/admin/faults", headers=AUTH, json=knobs)
    assert response.status_code == 422
    assert field in {d["field"] for d in response.json()["detail"]}


def test_error_rate_fault_gives_500_json(client):
    client.put(f"{ADMIN}/admin/faults", headers=AUTH, json={"error_rate": 1.0})
    response = client.post("/predict", json=GOOD)
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error"}
    assert response.headers["x-backend"] == "api2"
    assert 'route="/predict",status="500"} 1.0' in client.get("/metrics").text
    assert client.get("/healthz").status_code == 200


def test_leak_fault_keeps_memory(client):
    before = len(LEAKED)
    client.put(f"{ADMIN}/admin/faults", headers=AUTH, json={"leak_mb_per_request": 1})
    client.post("/predict", json=GOOD)
    client.post("/predict", json=GOOD)
    assert len(LEAKED) == before + 2
    assert client.get(f"{ADMIN}/admin/faults", headers=AUTH).json()["leaked_mb"] >= 2


def test_missing_model_still_starts(tmp_path):
    with TestClient(create_app(_settings(tmp_path / "empty"))) as c:
        assert c.get("/healthz").status_code == 200
        response = c.post("/predict", json=GOOD)
        assert response.status_code == 503 and response.json()["error"] == "model_not_loaded"
        reasons = c.get("/readyz").json()["reasons"]
        assert any(r.startswith("model not loaded") and "no model versions" in r
                   for r in reasons)
        assert any(r.startswith("database unreachable") for r in reasons)
        assert 'predictions_total{outcome="model_error"} 1.0' in c.get("/metrics").text
        train(tmp_path / "empty", **SMALL)
        response = c.post(f"{ADMIN}/admin/model/reload", headers=AUTH, json={})
        assert response.status_code == 200 and response.json()["previous"] is None
        assert not any("model" in r for r in c.get("/readyz").json()["reasons"])
