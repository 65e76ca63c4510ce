"""The API's contract, tried as a user's contract test would: schemathesis generates requests
from the OpenAPI documents (valid ones, invalid ones, undeclared methods) and runs every one of
its checks on the answers. Against the live AFTER lab through nginx for the public document,
against a replica's admin port with the lab's token for the admin document; and straight at
the BEFORE lab's only replica. Derandomized, so a failure shows again on the next run."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks

from stack.lab.lab import Lab

pytestmark = [pytest.mark.integration, pytest.mark.slow]

load_all_checks()
# Every check schemathesis has (what `schemathesis run --checks all` runs); the class-based
# ones need a whole run and do not apply to single responses.
ALL_CHECKS = [check for check in CHECKS.get_all() if not isinstance(check, type)]
EXAMPLES = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.filter_too_much])
TIMEOUT_S = 10


@pytest.fixture(scope="module")
def after_lab(runs_root: Path, model_dir: Path):
    with Lab("after", runs_root / "contract-after", model_dir=model_dir) as lab:
        yield lab


@pytest.fixture(scope="module")
def admin(after_lab: Lab):
    """api1's admin port and the lab's token; its fault knobs are reset afterwards (the
    fuzzer turns them)."""
    api = after_lab.apis[0]
    yield api.admin_url, {"Authorization": f"Bearer {api.admin_token}"}
    api.admin("PUT", "/admin/faults", json={}).raise_for_status()


@pytest.fixture(scope="module")
def public_schema(after_lab: Lab):
    return schemathesis.openapi.from_url(after_lab.public_url + "/openapi.json",
                                         timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def admin_schema(admin):
    url, auth = admin
    # the token fetches the document; call_and_validate sends it with every request below
    return schemathesis.openapi.from_url(url + "/admin/openapi.json", headers=auth,
                                         timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def before_schema(before_lab):
    return schemathesis.openapi.from_url(before_lab.public_url + "/openapi.json",
                                         timeout=TIMEOUT_S)


public = schemathesis.pytest.from_fixture("public_schema")
admin_doc = schemathesis.pytest.from_fixture("admin_schema")
before = schemathesis.pytest.from_fixture("before_schema")


def test_public_document_is_the_public_api(after_lab: Lab, admin):
    doc = httpx.get(after_lab.public_url + "/openapi.json", timeout=TIMEOUT_S).json()
    assert set(doc["paths"]) == {"/predict", "/healthz", "/readyz", "/metrics"}
    assert "admin" not in str(doc).lower()
    url, auth = admin
    assert httpx.get(url + "/admin/openapi.json", timeout=TIMEOUT_S).status_code == 401
    assert httpx.get(after_lab.public_url + "/admin/openapi.json",
                     headers=auth, timeout=TIMEOUT_S).status_code == 404


@public.parametrize()
@EXAMPLES
def test_public_contract_through_nginx(case):
    case.call_and_validate(checks=ALL_CHECKS, timeout=TIMEOUT_S)


@admin_doc.parametrize()
@EXAMPLES
def test_admin_contract_with_the_token(case, admin):
    _, auth = admin
    case.call_and_validate(checks=ALL_CHECKS, headers=auth, timeout=TIMEOUT_S)


@before.parametrize()
@EXAMPLES
def test_public_contract_at_a_replica(case):
    case.call_and_validate(checks=ALL_CHECKS, timeout=TIMEOUT_S)


def test_the_lab_serves_after_the_fuzzing(after_lab: Lab, admin):
    """Bad input left no replica dead or unready, and the knobs are back at 0."""
    url, auth = admin
    assert httpx.put(url + "/admin/faults", headers=auth, json={},
                     timeout=TIMEOUT_S).status_code == 200
    for api in after_lab.apis:
        assert httpx.get(api.url + "/readyz", timeout=TIMEOUT_S).status_code == 200
    answer = httpx.post(after_lab.public_url + "/predict", timeout=TIMEOUT_S, json={
        "customer_id": 1, "amount": 10.0, "merchant_category": "fuel", "country": "US",
        "hour": 9, "is_online": False})
    assert answer.status_code == 200, answer.text
