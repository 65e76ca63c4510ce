"""Property-based requests generated from the API's own OpenAPI schema, against the real
BEFORE lab: whatever schemathesis sends, the API answers without a 5xx."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def api_schema(before_lab):
    return schemathesis.openapi.from_url(before_lab.public_url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_no_server_errors(case):
    case.call_and_validate(checks=[not_a_server_error], timeout=10)
