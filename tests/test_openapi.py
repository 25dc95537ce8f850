"""The REST API against its OpenAPI document (docs/openapi.yaml, served at /api/openapi.yaml):
schemathesis generates requests for every operation, valid and invalid ones, against a live node.
No answer may be a 5xx, and every answer must be documented and match its schema."""

from __future__ import annotations

import uuid

import httpx
import pytest
import schemathesis
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.errors import InvalidSchema
from schemathesis.core.result import Err, Result
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="module")
def bearer(shared_cluster) -> dict[str, str]:
    response = httpx.post(f"{shared_cluster.urls[0]}/api/user/enter/oa{uuid.uuid4().hex[:10]}", timeout=10)
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['data']['token']}"}


def test_the_node_serves_the_document_in_the_repository(cluster):
    served = httpx.get(f"{cluster.urls[1]}/api/openapi.yaml", timeout=10)
    assert served.status_code == 200 and served.headers["content-type"] == "application/yaml"
    assert served.content == (REPO / "docs" / "openapi.yaml").read_bytes()


# Loaded from the repository at collection, so every operation is a test of its own; the
# requests go to a live node.
SCHEMA = schemathesis.openapi.from_path(REPO / "docs" / "openapi.yaml")


def _operation(result: Result[APIOperation, InvalidSchema]) -> APIOperation:
    """An operation of the schema; one the schema describes wrongly fails the collection."""
    if isinstance(result, Err):
        raise result.err()
    return result.ok()


OPERATIONS = [_operation(result) for result in SCHEMA.get_all_operations()]
# Invalid requests exist only for operations that take something.
CASES = [(operation, GenerationMode.POSITIVE) for operation in OPERATIONS] + [
    (operation, GenerationMode.NEGATIVE)
    for operation in OPERATIONS
    if operation.path_parameters or operation.query or operation.body
]


@pytest.mark.parametrize("operation, mode", CASES, ids=lambda value: getattr(value, "label", value))
def test_every_answer_matches_the_document(cluster, bearer, operation, mode):
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def call(case):
        case.call_and_validate(base_url=cluster.urls[0], headers=bearer, checks=CHECKS, timeout=10)

    call()
