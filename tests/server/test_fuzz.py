"""Fuzz every operation of the served OpenAPI document with schemathesis (a live server).

A real ``nbflow server`` (subprocess, services off) serves the API, once on SQLite and once
on PostgreSQL (whose text refuses NUL, which the generators love); schemathesis reads
``/openapi.json`` from it and sends ``MAX_EXAMPLES`` generated requests per operation,
authenticated with the server's token, first valid (positive) then schema-breaking
(negative) ones.  Every answer must be no 5xx, and a response whose status the document
describes must match its schema and content type.  The examples are derandomized and
bounded so that the whole module stays within a few minutes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from tests.databases import BACKENDS, database_url
from tests.live_server import LiveServer

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 25


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with database_url(request.param, base) as url, LiveServer(base, db_url=url) as server:
        yield server


def _operations(live: LiveServer) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(
        f"{live.api_url}/openapi.json", headers={"Authorization": f"token {live.token}"}
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    # /events is a websocket: a plain GET is tornado's 400 "Can Upgrade only to WebSocket".
    return [op for op in operations if not op.path.endswith("/events")]


def _fuzz(
    operation: schemathesis.APIOperation, live: LiveServer, mode: schemathesis.GenerationMode
) -> None:
    """Send MAX_EXAMPLES generated requests to one operation; raise on the first failure."""

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=live.url,
            headers={"Authorization": f"token {live.token}"},
            checks=[
                schemathesis.checks.not_a_server_error,
                response_schema_conformance,
                content_type_conformance,
            ],
            timeout=30,
        )

    check()


def test_every_operation_has_no_server_errors_and_answers_as_documented(
    live: LiveServer,
) -> None:
    # One test walks the operations (schemathesis' lazy pytest loader does not support
    # pytest 9); every operation is fuzzed even when an earlier one fails.
    operations = _operations(live)
    assert len(operations) >= 25
    failures: list[str] = []
    for operation in operations:
        try:
            _fuzz(operation, live, schemathesis.GenerationMode.POSITIVE)
        except BaseException as exc:  # hypothesis raises an exception group
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.label}: {type(exc).__name__}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)


def test_invalid_requests_get_4xx_not_5xx(live: LiveServer) -> None:
    # Requests that break the schema (wrong types, missing fields, bad ids): never a 5xx.
    failures: list[str] = []
    for operation in _operations(live):
        try:
            _fuzz(operation, live, schemathesis.GenerationMode.NEGATIVE)
        except BaseException as exc:  # hypothesis raises an exception group
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.label}: {type(exc).__name__}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)
