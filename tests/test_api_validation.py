"""Bad input gets a 4xx JSON naming the problem, never a 500; a down database gets 503s.

The database is a closed port, so no Postgres is needed; the model is real.
"""
import json
import warnings

import pytest

from stack.api import ApiSettings, create_app
from stack.model.train import train

with warnings.catch_warnings():
    # starlette 1.x prefers httpx2 for its TestClient; httpx still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

DOWN_DB = "host=127.0.0.1 port=1 dbname=fraud user=app connect_timeout=1"
GOOD = {"customer_id": 5, "amount": 12.5, "merchant_category": "grocery", "country": "GB",
        "hour": 14, "is_online": False}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("models")
    train(path, n_customers=200, n_txns=3000)
    return path


@pytest.fixture
def settings(tmp_path, model_dir):
    return ApiSettings(name="api1", port=8001, admin_port=9001, admin_token="secret-token",
                       db_conninfo=DOWN_DB, db_pool_timeout_s=0.3, model_dir=str(model_dir),
                       run_dir=str(tmp_path))


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def _post_raw(client, body, **kw):
    return client.post("/predict", content=body, headers={"content-type": "application/json"},
                       **kw)


def _fields(response):
    body = response.json()
    assert body["error"] == "invalid_request", body
    return {d["field"]: d["message"] for d in body["detail"]}


@pytest.mark.parametrize("body, field, words", [
    (json.dumps({k: v for k, v in GOOD.items() if k != "amount"}), "amount", "required"),
    (json.dumps({**GOOD, "surprise": 1}), "surprise", "not permitted"),
    (json.dumps({**GOOD, "customer_id": "5"}), "customer_id", "integer"),
    (json.dumps({**GOOD, "customer_id": 5.5}), "customer_id", "integer"),
    (json.dumps({**GOOD, "customer_id": True}), "customer_id", "integer"),
    (json.dumps({**GOOD, "customer_id": 2**31}), "customer_id", "less than or equal to"),
    (json.dumps({**GOOD, "customer_id": 0}), "customer_id", "greater than or equal to 1"),
    (json.dumps({**GOOD, "is_online": "yes"}), "is_online", "boolean"),
    (json.dumps({**GOOD, "hour": 24}), "hour", "less than or equal to 23"),
    (json.dumps({**GOOD, "country": "gb"}), "country", "pattern"),
    (json.dumps({**GOOD, "merchant_category": "casino"}), "merchant_category", "gift_cards"),
    (json.dumps({**GOOD, "amount": -3}), "amount", "greater than 0"),
    (json.dumps({**GOOD, "amount": 0}), "amount", "greater than 0"),
    (json.dumps({**GOOD, "amount": 1e12}), "amount", "less than or equal to 1000000"),
    (json.dumps({**GOOD, "amount": True}), "amount", "number"),
    (json.dumps({**GOOD, "amount": "12.5"}), "amount", "number"),
    (json.dumps({**GOOD, "amount": float("nan")}), "amount", "finite"),
    (json.dumps({**GOOD, "amount": float("inf")}), "amount", "finite"),
    (json.dumps({**GOOD, "amount": float("-inf")}), "amount", "finite"),
    ('{"customer_id": 5, "amount": 12.5,', "body", "malformed JSON"),
    ("not json at all", "body", "malformed JSON"),
    # not UTF-8: FastAPI's own answer would be a bare 400 that names nothing
    (b'{"amount": "\xff\xfe"}', "body", "malformed JSON: 'utf-8' codec can't decode"),
    ("", "body", "required"),
    ("[1, 2]", "body", "dictionary"),
])
def test_bad_input_is_a_422_naming_the_field(client, body, field, words):
    response = _post_raw(client, body)
    assert response.status_code == 422, response.text
    fields = _fields(response)
    assert field in fields, fields
    assert words.lower() in fields[field].lower()


def test_several_problems_are_all_listed(client):
    response = client.post("/predict", json={"customer_id": -1, "amount": -1, "hour": 99})
    fields = _fields(response)
    assert {"customer_id", "amount", "hour", "merchant_category", "country",
            "is_online"} <= set(fields)


def test_body_over_1mb_by_content_length(client):
    response = _post_raw(client, b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


def test_body_over_1mb_streamed_in_chunks(client):
    def chunks():
        for _ in range(12):
            yield b"x" * 100_000

    response = client.post("/predict", content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


def test_body_just_under_the_limit_is_parsed(client):
    padded = json.dumps(GOOD)[:-1] + ', "pad": "' + "x" * 1_000_000 + '"}'
    response = _post_raw(client, padded)
    assert response.status_code == 422
    assert "pad" in _fields(response)


def test_valid_request_with_down_database_is_503(client):
    response = client.post("/predict", json=GOOD)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "database_unavailable"
    assert body["detail"]
    assert response.headers["x-backend"] == "api1"
    assert response.headers["retry-after"] == "1"  # when a keyed retry is worth trying


def test_bad_idempotency_key_is_refused(client):
    response = client.post("/predict", json=GOOD, headers={"Idempotency-Key": "not-a-uuid"})
    assert response.status_code == 422
    assert "Idempotency-Key" in _fields(response)


def test_server_keeps_serving_after_bad_input(client):
    for body in ("{", json.dumps({**GOOD, "amount": float("nan")}), "[]"):
        assert _post_raw(client, body).status_code == 422
    assert client.get("/healthz").status_code == 200
    assert client.post("/predict", json=GOOD).status_code == 503


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive", "replica": "api1"}
    assert response.headers["x-backend"] == "api1"


def test_readyz_names_the_database(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert len(body["reasons"]) == 1
    assert body["reasons"][0].startswith("database unreachable")


def test_unknown_route_and_method_are_json(client):
    response = client.get("/nope")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    response = client.get("/predict")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("method, path, allow", [
    ("GET", "/predict", "POST"), ("TRACE", "/predict", "POST"), ("DELETE", "/healthz", "GET"),
    ("OPTIONS", "/readyz", "GET"), ("POST", "/metrics", "GET"),
])
def test_a_method_a_route_does_not_take_is_405_with_allow(client, method, path, allow):
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json() == {"error": "method_not_allowed",
                               "detail": f"{path} takes {allow} only"}


def test_integral_numbers_are_integers(client):
    """5.0 is an integer in JSON Schema, so the server takes it as one (5.5 it refuses)."""
    response = client.post("/predict", json={**GOOD, "customer_id": 5.0, "hour": 14.0})
    assert response.status_code == 503, response.text  # validated, then the database is down


def test_public_document_describes_the_public_api_only(client):
    doc = client.get("/openapi.json").json()
    assert set(doc["paths"]) == {"/predict", "/healthz", "/readyz", "/metrics"}
    assert "/admin" not in json.dumps(doc)
    schemas = doc["components"]["schemas"]
    # every rule the server checks is in the schema, for a generated client to check too
    txn = schemas["Transaction"]
    assert txn["additionalProperties"] is False
    assert set(txn["required"]) == set(GOOD)
    props = txn["properties"]
    assert (props["amount"]["exclusiveMinimum"], props["amount"]["maximum"]) == (0, 1_000_000)
    assert (props["customer_id"]["minimum"], props["customer_id"]["maximum"]) == (1, 2**31 - 1)
    assert (props["hour"]["minimum"], props["hour"]["maximum"]) == (0, 23)
    assert props["country"]["pattern"] == "^[A-Z]{2}$"
    assert "gift_cards" in props["merchant_category"]["enum"]
    predict = doc["paths"]["/predict"]["post"]
    key = predict["parameters"][0]
    assert (key["name"], key["schema"]["type"], key["schema"]["format"]) == (
        "Idempotency-Key", "string", "uuid")
    responses = predict["responses"]
    assert set(responses) == {"200", "404", "409", "413", "422", "500", "503"}
    assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/InvalidRequest")
    assert schemas["InvalidRequest"]["properties"]["detail"]["items"]["$ref"].endswith(
        "/FieldError")
    assert "Retry-After" in responses["503"]["headers"]
    unavailable = schemas[responses["503"]["content"]["application/json"]["schema"]["$ref"]
                          .rsplit("/", 1)[1]]
    assert set(unavailable["properties"]["error"]["enum"]) == {"model_not_loaded",
                                                               "database_unavailable"}
    assert set(doc["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4; charset=utf-8"]
    assert client.get("/metrics").headers["content-type"] == list(metrics)[0]


def test_admin_is_not_served_on_the_public_port(client):
    auth = {"Authorization": "Bearer secret-token"}
    assert client.get("/admin/faults", headers=auth).status_code == 404
    assert client.put("/admin/faults", headers=auth, json={}).status_code == 404
    assert client.post("/admin/model/reload", headers=auth, json={}).status_code == 404


def test_metrics(client):
    client.post("/predict", json=GOOD)
    _post_raw(client, "{")
    text = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/predict",status="503"} 1.0' in text
    assert 'http_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    assert 'predictions_total{outcome="db_error"} 1.0' in text
    assert 'cache_requests_total{result="disabled"} 1.0' in text
    assert "http_request_duration_seconds_bucket" in text
    assert "http_requests_in_flight" in text
    assert 'db_pool_connections{state="size"}' in text
    assert 'model_info{sha256="' in text and 'version="v1"} 1.0' in text
