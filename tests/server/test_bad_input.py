"""Bad input gets a clear 4xx, never a 500 or a stall: the issue's reproductions on a real server.

A real ``nbflow server`` (subprocess) so that the body limit is checked where it matters:
in the server process, before a body is read whole, with its memory measured from outside.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.databases import database_url
from tests.live_server import LiveServer

pytestmark = pytest.mark.slow

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("bad-input")) as server:
        yield server


@pytest.fixture
def http(live: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"token {live.token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=live.api_url, headers=headers, timeout=120) as client:
        yield client


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _flow(http: httpx.Client, name: str, schema: dict[str, object]) -> str:
    response = http.post("/flows", json={"name": name, "parameters_schema": schema})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_a_body_over_the_limit_is_refused_413_without_being_read_whole(
    live: LiveServer, http: httpx.Client
) -> None:
    assert live.proc is not None
    before = _rss_bytes(live.proc.pid)
    sent = 0

    def body() -> Iterator[bytes]:
        # 300 MB streamed (chunked, no Content-Length): the server cannot know the size
        # up front and must stop at its limit.
        nonlocal sent
        chunk = b"[" + b"0," * (MIB // 2 - 1) + b"0]"
        for _ in range(300):
            sent += len(chunk)
            yield chunk

    try:
        response = http.post("/flows", content=body())
        status = response.status_code
        answer = response.json()
    except httpx.TransportError:
        pytest.fail("the server closed the connection without answering 413")
    assert status == 413, answer
    assert answer["errors"][0]["field"] == "body"
    assert "16777216" in answer["message"]
    assert sent < 300 * MIB  # it stopped reading: the client did not have to send it all
    # The server did not hold the body: its memory grew by far less than what was sent.
    assert _rss_bytes(live.proc.pid) - before < 100 * MIB
    assert http.get("/flows").status_code == 200


def test_a_declared_length_over_the_limit_is_refused_413(http: httpx.Client) -> None:
    body = b" " * (17 * MIB)
    response = http.post("/flows", content=body)
    assert response.status_code == 413
    assert response.json()["errors"][0]["field"] == "body"
    assert http.get("/flows").status_code == 200


def test_a_body_under_the_limit_is_accepted(http: httpx.Client) -> None:
    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}
    description = "x" * (2 * MIB)
    flow_id = _flow(http, "big-enough", {})
    response = http.post(
        "/deployments",
        json={"flow_id": flow_id, "name": "d", "notebook": notebook, "description": description},
    )
    assert response.status_code == 201, response.text[:500]


def test_deeply_nested_json_is_400_naming_body(http: httpx.Client) -> None:
    # The reproduction: 100,000 "[" was a RecursionError, a 500.
    response = http.post("/flows", content=b"[" * 100_000)
    assert response.status_code == 400, response.text[:500]
    assert response.json()["errors"][0]["field"] == "body"
    assert "nested deeper than 64" in response.json()["message"]
    closed = b"[" * 65 + b"]" * 65  # valid JSON, one level too deep
    response = http.post("/flows", content=closed)
    assert response.status_code == 400
    assert "nested deeper than 64" in response.json()["message"]


def test_parameters_nested_900_deep_are_400(http: httpx.Client) -> None:
    flow_id = _flow(http, "deep", {"properties": {"x": {}}})
    deep = "[" * 900 + "1" + "]" * 900
    body = f'{{"flow_id": "{flow_id}", "parameters": {{"x": {deep}}}}}'
    response = http.post("/flow_runs", content=body.encode())
    assert response.status_code == 400, response.text[:500]
    assert response.json()["errors"][0]["field"] == "body"


def test_a_pathological_pattern_is_refused_at_registration(http: httpx.Client) -> None:
    schema = {"properties": {"x": {"type": "string", "pattern": "^(a+)+$"}}}
    response = http.post("/flows", json={"name": "redos", "parameters_schema": schema})
    assert response.status_code == 400
    field = response.json()["errors"][0]["field"]
    assert field == "body.parameters_schema.properties.x.pattern"


def test_a_bad_schema_type_is_refused_at_registration_not_on_every_run(
    http: httpx.Client,
) -> None:
    schema = {"properties": {"x": {"type": 5}}}
    response = http.post("/flows", json={"name": "typed5", "parameters_schema": schema})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body.parameters_schema.properties.x.type"


@pytest.fixture(scope="module")
def pg_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    base = tmp_path_factory.mktemp("bad-input-pg")
    with database_url("postgresql", base) as url, LiveServer(base, db_url=url) as server:
        headers = {"Authorization": f"token {server.token}"}
        with httpx.Client(base_url=server.api_url, headers=headers, timeout=60) as client:
            yield client


@pytest.mark.postgres
def test_nul_in_a_name_is_400_naming_the_field_on_postgresql(pg_http: httpx.Client) -> None:
    response = pg_http.post("/flows", json={"name": "a\x00b"})
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "body.name"
    # Tornado drops control characters from query arguments: a plain miss, not a 500.
    assert pg_http.get("/flows", params={"name": "a\x00b"}).status_code == 404
    flow_id = _flow(pg_http, "nul", {"properties": {"x": {"type": "string"}}})
    response = pg_http.post("/flow_runs", json={"flow_id": flow_id, "name": "r\x00"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body.name"
    # A NUL inside a JSON value (a parameter) is fine: JSON escapes it.
    response = pg_http.post("/flow_runs", json={"flow_id": flow_id, "parameters": {"x": "\x00"}})
    assert response.status_code == 201, response.text
    assert response.json()["parameters"] == {"x": "\x00"}


@pytest.mark.postgres
def test_a_log_batch_with_a_nul_line_keeps_every_line_on_postgresql(
    pg_http: httpx.Client,
) -> None:
    flow_id = _flow(pg_http, "logs", {})
    run = pg_http.post("/flow_runs", json={"flow_id": flow_id}).json()
    lines = ["one", "t\x00wo", "three"]
    logs = [{"flow_run_id": run["id"], "message": m} for m in lines]
    response = pg_http.post("/logs/batch", json={"logs": logs})
    assert response.status_code == 204, response.text
    page = pg_http.get("/logs", params={"flow_run_id": run["id"]}).json()
    assert [entry["message"] for entry in page["logs"]] == ["one", "t\ufffdwo", "three"]
