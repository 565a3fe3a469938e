"""Schema fuzzing (schemathesis) of a real API process with auth on: whatever a client
sends, no 5xx, and every answer is one the OpenAPI schema documents, body and status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.schemas import BaseSchema

from tests.unit.api.conftest import SecuredApi, secured_api

pytestmark = pytest.mark.slow

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


@pytest.fixture(scope="module")
def fuzzed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredApi]:
    """Embedded backend and no worker: submitted jobs stay queued, which is all we need."""
    with secured_api(tmp_path_factory.mktemp("fuzz")) as api:
        yield api


@pytest.fixture(scope="module")
def api_schema(fuzzed_api: SecuredApi) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed_api.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=50,
    derandomize=True,  # the same cases every run: a failure reproduces
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_given_any_request_then_no_server_error_and_the_answer_matches_the_schema(
    case: Case, fuzzed_api: SecuredApi
) -> None:
    if isinstance(case.body, dict) and case.body.get("wait"):
        # `wait` holds the request until the job ends, and no worker runs here
        case.body["wait"] = False
    case.call_and_validate(
        base_url=fuzzed_api.url,
        headers={"Authorization": f"Bearer {fuzzed_api.key}"},
        checks=CHECKS,
        timeout=30,
    )
