"""``POST /flow_runs/{id}/children``: what a pipeline's run token may ask for, and no more.

A run the server dispatched holds only its run token.  It may start child runs of itself
(run on its own runner with its own job variables), read and cancel those children, and
read their task runs — nothing about any other run, and never choose how a child executes.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest

from nbflow.schemas import (
    Deployment,
    DeploymentCreate,
    Flow,
    FlowRun,
    FlowRunCreate,
    FlowRunFilter,
)
from nbflow.states import Pending, Running, Scheduled, StateType
from nbflow_server import NbflowApp
from tests.server.helpers import Api, make_notebook

CHILD = make_notebook(["%%flow child_nb\nregion = 'EU'", "%%task total\ntotal = 1"])


def _running(app: NbflowApp, deployment: Deployment | None = None, **fields: Any) -> FlowRun:
    client = app.client
    flow = client.create_flow(Flow(name="parent_nb"))
    run = client.create_flow_run(
        FlowRunCreate(
            flow_id=flow.id,
            deployment_id=deployment.id if deployment else None,
            state=Scheduled(),
            runner="subprocess",
            mode="batch",
            **fields,
        )
    )
    client.set_flow_run_state(run.id, Pending(), force=True)
    client.set_flow_run_state(run.id, Running(), force=True)
    return client.read_flow_run(run.id)


def _token(app: NbflowApp, run: FlowRun) -> dict[str, str]:
    return {"Authorization": f"token {app.mint_run_token(run.id)}"}


def _body(**extra: Any) -> dict[str, Any]:
    return {"notebook": CHILD, "notebook_path": "/data/pipes/child.ipynb", **extra}


async def test_a_run_token_starts_a_child_on_its_own_runner_and_job_variables(
    api: Api, nbflow_app: NbflowApp
) -> None:
    flow = nbflow_app.client.create_flow(Flow(name="parent_nb"))
    deployment = nbflow_app.client.create_deployment(
        DeploymentCreate(
            flow_id=flow.id,
            name="pipe",
            notebook=make_notebook(),
            job_variables={"env": {"FROM": "deployment"}, "stream_output": False},
        )
    )
    parent = _running(nbflow_app, deployment, job_variables={"env": {"RUN": "1"}})
    key = uuid4().hex
    status, child = await api(
        "POST",
        "flow_runs",
        str(parent.id),
        "children",
        body=_body(parameters={"region": "US"}, idempotency_key=key),
        headers=_token(nbflow_app, parent),
    )
    assert status == 201, child
    assert child["parent_flow_run_id"] == str(parent.id)
    assert child["state"]["type"] == "SCHEDULED"  # the dispatcher launches it
    assert child["runner"] == "subprocess"
    assert child["parameters"] == {"region": "US"}
    assert child["notebook_path"] == "/data/pipes/child.ipynb"
    assert child["job_variables"] == {
        "env": {"FROM": "deployment", "RUN": "1"},
        "stream_output": False,
        "working_dir": "/data/pipes",
    }
    # a replay (lost answer) returns the same child
    again = await api(
        "POST",
        "flow_runs",
        str(parent.id),
        "children",
        body=_body(parameters={"region": "US"}, idempotency_key=key),
        headers=_token(nbflow_app, parent),
    )
    assert again[1]["id"] == child["id"]

    # the parent's token reads its child and its task runs, and cancels it
    headers = _token(nbflow_app, parent)
    assert (await api("GET", "flow_runs", child["id"], headers=headers))[0] == 200
    status, page = await api(
        "GET", "task_runs", params={"flow_run_ids": child["id"]}, headers=headers
    )
    assert status == 200, page
    status, result = await api("POST", "flow_runs", child["id"], "cancel", headers=headers)
    assert status == 200, result
    assert nbflow_app.client.read_flow_run(UUID(child["id"])).state_type is StateType.CANCELLED


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"runner": "docker"}, "body.runner"),
        ({"job_variables": {"python": "/tmp/evil"}}, "body.job_variables"),
        ({"job_variables": {}}, "body.job_variables"),
    ],
)
async def test_a_run_token_may_not_choose_how_a_child_runs(
    api: Api, nbflow_app: NbflowApp, extra: dict[str, Any], field: str
) -> None:
    parent = _running(nbflow_app)
    status, body = await api(
        "POST",
        "flow_runs",
        str(parent.id),
        "children",
        body=_body(**extra),
        headers=_token(nbflow_app, parent),
    )
    assert status == 403, body
    assert body["errors"][0]["field"] == field
    assert "parent's runner" in body["message"]
    children = FlowRunFilter(parent_flow_run_ids=[parent.id])
    assert nbflow_app.client.read_flow_runs(children) == []


async def test_a_user_may_choose_the_childs_runner_and_job_variables(
    api: Api, nbflow_app: NbflowApp
) -> None:
    parent = _running(nbflow_app)
    status, child = await api(
        "POST",
        "flow_runs",
        str(parent.id),
        "children",
        body=_body(runner="subprocess", job_variables={"env": {"A": "1"}}),
    )
    assert status == 201, child
    assert child["job_variables"] == {"env": {"A": "1"}, "working_dir": "/data/pipes"}


async def test_a_run_token_reaches_no_other_run_and_not_its_own_cancel(
    api: Api, nbflow_app: NbflowApp
) -> None:
    parent, other = _running(nbflow_app), _running(nbflow_app)
    headers = _token(nbflow_app, parent)
    # a child of another run: not the token's to start, read or cancel
    status, body = await api(
        "POST", "flow_runs", str(other.id), "children", body=_body(), headers=headers
    )
    assert status == 403, body
    status, theirs = await api("POST", "flow_runs", str(other.id), "children", body=_body())
    assert status == 201
    status, own = await api("POST", "flow_runs", str(parent.id), "children", body=_body())
    child_of_own = own["id"]  # two runs at once, even its own and its child: refused
    for method, path, params in [
        ("GET", ("flow_runs", theirs["id"]), None),
        ("POST", ("flow_runs", theirs["id"], "cancel"), None),
        ("GET", ("flow_runs", str(other.id)), None),
        ("GET", ("task_runs",), {"flow_run_ids": theirs["id"]}),
        ("GET", ("task_runs",), [("flow_run_ids", str(parent.id)), ("flow_run_ids", child_of_own)]),
        ("GET", ("flow_runs", str(uuid4())), None),
    ]:
        status, body = await api(method, *path, params=params, headers=headers)
        assert status == 403, (method, path, body)
    # its own run is cancelled by the user, not by its token
    status, body = await api("POST", "flow_runs", str(parent.id), "cancel", headers=headers)
    assert status == 403, body
    assert nbflow_app.client.read_flow_run(other.id).state_type is StateType.RUNNING


async def test_a_run_token_may_not_change_a_registered_flow(
    api: Api, nbflow_app: NbflowApp
) -> None:
    parent = _running(nbflow_app)
    headers = _token(nbflow_app, parent)
    assert (
        await api("POST", "flow_runs", str(parent.id), "children", body=_body(), headers=headers)
    )[0] == 201
    changed = make_notebook(["%%flow child_nb\nregion = 'EU'\nlimit = 5"])
    status, body = await api(
        "POST",
        "flow_runs",
        str(parent.id),
        "children",
        body={"notebook": changed, "notebook_path": "/data/pipes/child.ipynb"},
        headers=headers,
    )
    assert status == 403, body
    assert "nbflow run" in body["message"]
    flow = nbflow_app.client.read_flow_by_name("child_nb")
    assert set(flow.parameters_schema["properties"]) == {"region"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"notebook": {"cells": "no"}, "notebook_path": "/a/b.ipynb"}, "body.notebook"),
        ({"notebook": CHILD, "notebook_path": "child.ipynb"}, "body.notebook_path"),
        (
            {"notebook": CHILD, "notebook_path": "/a/b.ipynb", "parameters": {"nope": 1}},
            "body.parameters.nope",
        ),
        (
            {"notebook": CHILD, "notebook_path": "/a/b.ipynb", "parent_task_run_id": "x"},
            "body.parent_task_run_id",
        ),
        (
            {"notebook": CHILD, "notebook_path": "/a/b.ipynb", "runner": "no-such-runner"},
            "body.runner",
        ),
    ],
)
async def test_bad_child_requests_name_the_field(
    api: Api, nbflow_app: NbflowApp, body: dict[str, Any], field: str
) -> None:
    parent = _running(nbflow_app)
    status, answer = await api(
        "POST",
        "flow_runs",
        str(parent.id),
        "children",
        body=body,
        headers=_token(nbflow_app, parent),
    )
    assert status == 400, answer
    assert any(e["field"] == field for e in answer["errors"]), answer


async def test_only_a_running_parent_starts_children(api: Api, nbflow_app: NbflowApp) -> None:
    parent = _running(nbflow_app)
    nbflow_app.client.cancel_flow_run(parent.id)
    status, body = await api("POST", "flow_runs", str(parent.id), "children", body=_body())
    assert status == 409, body
    assert "Running" in body["message"]
