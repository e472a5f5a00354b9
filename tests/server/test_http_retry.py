"""The HTTP client rides out a server that blinks: retry with backoff within a window.

The policy cases inject a scripted inner transport through the client's ``transport``
option (the server's answers chosen per attempt); the last test kills a real
``nbflow server`` with SIGKILL and starts it again on the same port and database.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from nbflow.client.http import APIError, HTTPClient
from nbflow.exceptions import FlowRunNotFound, ObjectAlreadyExists
from nbflow.schemas import Artifact, Flow, FlowRun
from nbflow.settings import reload_settings
from tests.live_server import LiveServer

API = "http://127.0.0.1:9/nbflow/api/v1"


class Scripted(httpx.BaseTransport):
    """Answer attempt i with ``script[i]``: a status code, or an exception to raise."""

    def __init__(self, script: list[int | Exception], body: bytes = b"{}") -> None:
        self.script, self.body = list(script), body
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, Exception):
            raise step
        return httpx.Response(step, content=self.body if step < 400 else b"{}", request=request)


def client_over(inner: httpx.BaseTransport, retry_seconds: float = 30.0) -> HTTPClient:
    return HTTPClient(API, token="t", transport=inner, retry_seconds=retry_seconds)


def test_503_and_refused_connections_are_retried_until_the_server_answers() -> None:
    inner = Scripted([httpx.ConnectError("refused"), 503, 502, 504, 204])
    client_over(inner).heartbeat(uuid4())
    assert len(inner.requests) == 5


def test_a_dropped_connection_is_retried_for_idempotent_writes() -> None:
    inner = Scripted([httpx.ReadError("connection reset"), 204])
    client_over(inner).heartbeat(uuid4())
    assert len(inner.requests) == 2


def test_a_create_without_idempotency_key_is_not_replayed_after_it_may_have_arrived() -> None:
    inner = Scripted([httpx.ReadError("connection reset")])
    with pytest.raises(APIError) as err:
        client_over(inner).run_deployment(uuid4())
    assert err.value.status_code == 0
    assert len(inner.requests) == 1
    stored = FlowRun(name="r", flow_id=uuid4())
    refused = Scripted(
        [httpx.ConnectError("refused"), 503, httpx.ConnectError("refused"), 201],
        body=stored.model_dump_json().encode(),
    )
    assert client_over(refused).run_deployment(uuid4()) == stored
    assert len(refused.requests) == 4


def test_zero_seconds_never_retries_and_the_error_names_the_server() -> None:
    inner = Scripted([httpx.ConnectError("refused"), 204])
    with pytest.raises(APIError, match="cannot reach the nbflow server") as err:
        client_over(inner, retry_seconds=0).heartbeat(uuid4())
    assert err.value.status_code == 0
    assert len(inner.requests) == 1


def test_the_window_counts_from_the_start_of_the_outage() -> None:
    down = [httpx.ConnectError("refused")] * 1000
    inner = Scripted(list(down))
    client = client_over(inner, retry_seconds=0.5)
    with pytest.raises(APIError):
        client.heartbeat(uuid4())
    first = len(inner.requests)
    assert first > 1
    with pytest.raises(APIError):  # still the same outage: one attempt, no new window
        client.heartbeat(uuid4())
    assert len(inner.requests) == first + 1
    inner.script = [204]
    client.heartbeat(uuid4())  # the server is back: the outage is over
    inner.script = [httpx.ConnectError("refused"), 204]
    client.heartbeat(uuid4())  # a new outage gets a new window
    assert client.transport.unreachable_since is None


def test_a_replayed_delete_that_finds_nothing_succeeds() -> None:
    inner = Scripted([httpx.ReadError("reset after the delete"), 404])
    client_over(inner).delete_flow_run(uuid4())
    assert len(inner.requests) == 2


def test_a_delete_of_a_missing_run_without_replay_still_raises() -> None:
    with pytest.raises(FlowRunNotFound):
        client_over(Scripted([404])).delete_flow_run(uuid4())


def test_a_replayed_artifact_that_already_exists_is_the_stored_one() -> None:
    artifact = Artifact(flow_run_id=uuid4(), key="k", kind="notebook", uri="/x.ipynb")
    inner = Scripted([httpx.ReadError("reset"), 409])
    assert client_over(inner).create_artifact(artifact) == artifact


def test_a_conflict_elsewhere_is_still_an_error() -> None:
    with pytest.raises(ObjectAlreadyExists):
        client_over(Scripted([409])).update_flow_run(uuid4(), name="x")


def test_the_window_comes_from_nbflow_api_retry_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_API_RETRY_SECONDS", "7.5")
    try:
        assert reload_settings().api_retry_seconds == 7.5
        assert HTTPClient(API).transport.retry_seconds == 7.5
        monkeypatch.setenv("NBFLOW_API_RETRY_SECONDS", "soon")
        with pytest.raises(ValueError, match="NBFLOW_API_RETRY_SECONDS='soon'"):
            reload_settings()
    finally:
        monkeypatch.delenv("NBFLOW_API_RETRY_SECONDS")
        reload_settings()


def test_a_runs_own_process_waits_longer_than_a_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBFLOW_API_RETRY_SECONDS", raising=False)
    try:
        monkeypatch.delenv("NBFLOW__FLOW_RUN_ID", raising=False)
        assert reload_settings().api_retry_seconds == 30
        monkeypatch.setenv("NBFLOW__FLOW_RUN_ID", str(uuid4()))
        assert reload_settings().api_retry_seconds == 600
    finally:
        monkeypatch.delenv("NBFLOW__FLOW_RUN_ID", raising=False)
        reload_settings()


@pytest.mark.slow
def test_a_write_waits_through_a_kill_and_restart_of_the_server(tmp_path: Path) -> None:
    server = LiveServer(tmp_path)
    server.start()
    try:
        client = HTTPClient(server.api_url, token=server.token, retry_seconds=120)
        client.create_flow(Flow(name="before"))
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait()
        answers: list[Flow] = []
        writer = threading.Thread(
            target=lambda: answers.append(client.create_flow(Flow(name="during"))), daemon=True
        )
        writer.start()
        time.sleep(2)
        assert writer.is_alive() and not answers  # waiting for the server, not failed
        server.start()  # same port, same database
        writer.join(120)
        assert [f.name for f in answers] == ["during"]
        assert client.read_flow(answers[0].id).name == "during"
        assert client.transport.unreachable_since is None
    finally:
        server.stop()
