"""``nbflow cancel`` against a live server and against the embedded store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nbflow.client import Client
from nbflow.client.embedded import EmbeddedClient
from nbflow.client.http import HTTPClient
from nbflow.schemas import Flow, FlowRun, FlowRunCreate
from nbflow.states import (
    AwaitingRetry,
    Cancelled,
    Completed,
    Late,
    Pending,
    Running,
    Scheduled,
    State,
    StateType,
)
from tests.cli.conftest import Runner
from tests.cli.test_deploy import run_cli
from tests.live_server import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("cancel-server")) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[HTTPClient]:
    http = HTTPClient(server.api_url, token=server.token)
    yield http
    http.close()


def _run(client: Client, *states: State) -> FlowRun:
    flow = client.create_flow(Flow(name="cancel-me"))
    run = client.create_flow_run(FlowRunCreate(flow_id=flow.id, state=Scheduled()))
    for state in states:
        client.set_flow_run_state(run.id, state)
    return client.read_flow_run(run.id)


def test_cancel_on_the_server(server: LiveServer, client: HTTPClient) -> None:
    scheduled = _run(client)
    r = run_cli(server, "cancel", str(scheduled.id)[:8])
    assert r.code == 0, r.err
    assert "Cancelled" in r.out
    assert client.read_flow_run(scheduled.id).state_type is StateType.CANCELLED

    running = _run(client, Pending(), Running())
    r = run_cli(server, "cancel", str(running.id))
    assert r.code == 0, r.err
    assert client.read_flow_run(running.id).state_type is StateType.CANCELLING

    done = _run(client, Pending(), Running(), Completed())
    r = run_cli(server, "cancel", str(done.id))
    assert r.code == 1 and "already finished (Completed)" in r.err

    unknown = run_cli(server, "cancel", "00000000-0000-0000-0000-000000000000")
    assert unknown.code == 1 and "not found" in unknown.err


def test_cancel_in_the_embedded_store(nbflow: Runner, nbflow_home: Path) -> None:
    store = EmbeddedClient.from_url(f"sqlite:///{nbflow_home / 'nbflow.db'}")
    try:
        scheduled = _run(store)
        late = _run(store, Late())
        rescheduled = _run(store, Pending(), Running(), AwaitingRetry())
        claimed = _run(store, Pending())  # claimed, nothing launched yet
        running = _run(store, Pending(), Running())
        assert nbflow("cancel", str(scheduled.id)[:8]).code == 0
        for run in (late, rescheduled, claimed):
            r = nbflow("cancel", str(run.id), "-m", "not needed")
            assert r.code == 0 and "Cancelled" in r.out, r.err
            stored = store.read_flow_run(run.id)
            assert stored.state is not None and stored.state.type is StateType.CANCELLED
            assert stored.state.message == "not needed"
        assert nbflow("cancel", str(running.id)).code == 0
        assert store.read_flow_run(scheduled.id).state_type is StateType.CANCELLED
        assert store.read_flow_run(running.id).state_type is StateType.CANCELLING
        # the run's owner ends it; then a second cancel is refused
        store.set_flow_run_state(running.id, Cancelled())
        again = nbflow("cancel", str(running.id))
        assert again.code == 1 and "already finished (Cancelled)" in again.err
    finally:
        store.close()
