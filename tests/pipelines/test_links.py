"""The pieces of a pipeline without kernels: ``--outputs``, the children filter, cascading cancel."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbflow.client.base import Client
from nbflow.client.embedded import EmbeddedClient
from nbflow.client.http import HTTPClient
from nbflow.exceptions import ValidationError
from nbflow.notebook.arguments import parse_flow_line, parse_flow_outputs
from nbflow.schemas import Flow, FlowRun, FlowRunCreate, FlowRunFilter
from nbflow.states import Completed, Pending, Running, Scheduled, StateType
from tests.live_server import TOKEN, LiveServer


def test_flow_outputs_are_parsed_not_job_variables() -> None:
    opts = parse_flow_line("sales --outputs total,orders --outputs extra --image python:3.12")
    assert opts.outputs == ("total", "orders", "extra")
    assert opts.job_variables == {"image": "python:3.12"}
    assert parse_flow_outputs(["sales", "--outputs=total", "--cpu", "2"]) == ("total",)
    assert parse_flow_outputs(["sales"]) == ()
    with pytest.raises(ValidationError, match=r"--outputs='2x': not a variable name"):
        parse_flow_line("sales --outputs total,2x")


def _run(
    client: Client, flow: Flow, parent: FlowRun | None = None, *, started: bool = False
) -> FlowRun:
    run = client.create_flow_run(
        FlowRunCreate(
            flow_id=flow.id,
            state=Scheduled(),
            mode="batch",
            parent_flow_run_id=parent.id if parent else None,
        )
    )
    if started:
        client.set_flow_run_state(run.id, Pending())
        client.update_flow_run(run.id, infrastructure_id="host:1")
        client.set_flow_run_state(run.id, Running())
    return client.read_flow_run(run.id)


def test_cancelling_a_parent_cancels_its_unfinished_children(client: EmbeddedClient) -> None:
    flow = client.create_flow(Flow(name="pipeline-links"))
    parent = _run(client, flow, started=True)
    running = _run(client, flow, parent, started=True)
    waiting = _run(client, flow, parent)
    finished = _run(client, flow, parent, started=True)
    client.set_flow_run_state(finished.id, Completed())
    grandchild = _run(client, flow, running)
    unrelated = _run(client, flow, started=True)

    children = client.read_flow_runs(FlowRunFilter(parent_flow_run_ids=[parent.id]))
    assert {c.id for c in children} == {running.id, waiting.id, finished.id}

    client.cancel_flow_run(parent.id)

    def state(run: FlowRun) -> StateType | None:
        current = client.read_flow_run(run.id).state
        return current.type if current else None

    assert state(parent) is StateType.CANCELLING
    # Started: Cancelling for its owner (the caller that launched it) to stop.
    assert state(running) is StateType.CANCELLING
    # Not started: Cancelled at once, and so is a child of a child.
    assert state(waiting) is StateType.CANCELLED
    assert state(grandchild) is StateType.CANCELLED
    assert state(finished) is StateType.COMPLETED
    assert state(unrelated) is StateType.RUNNING


def test_children_through_the_api(tmp_path: Path) -> None:
    """The HTTP client reaches the same filter and cascading cancel through a real server."""
    with LiveServer(tmp_path) as server:
        client = HTTPClient(server.api_url, token=TOKEN)
        try:
            flow = client.create_flow(Flow(name="pipeline-api"))
            parent = _run(client, flow)
            child = _run(client, flow, parent)
            _run(client, flow)
            found = client.read_flow_runs(FlowRunFilter(parent_flow_run_ids=[parent.id]))
            assert [r.id for r in found] == [child.id]
            assert found[0].parent_flow_run_id == parent.id
            client.cancel_flow_run(parent.id)
            state = client.read_flow_run(child.id).state
            assert state is not None and state.type is StateType.CANCELLED
        finally:
            client.close()
