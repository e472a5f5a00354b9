"""Every endpoint needs Jupyter auth; run tokens open only their own run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from tornado.httpclient import HTTPClientError

from nbflow.schemas import Flow, FlowRunCreate
from nbflow.states import Running, Scheduled
from nbflow_server import NbflowApp
from nbflow_server.handlers import ROUTES
from nbflow_server.handlers.base import RunAccess
from nbflow_server.openapi import endpoints
from tests.server.helpers import API, Api, make_notebook

ANY_ID = "00000000-0000-0000-0000-000000000001"


def _concrete(path: str) -> list[str]:
    parts = path.removeprefix("/nbflow/api/v1/").split("/")
    return [ANY_ID if p.startswith("{") else p for p in parts]


async def test_every_route_refuses_unauthenticated_requests(
    jp_fetch: Any, jp_ws_fetch: Any
) -> None:
    checked = 0
    for path, method, _spec in endpoints(ROUTES):
        no_auth = {"Authorization": ""}
        if path.endswith("/events"):
            with pytest.raises(HTTPClientError) as err:
                await jp_ws_fetch(*API, *_concrete(path)[len(API) - 3 :], headers=no_auth)
        else:
            body = "{}" if method in ("post", "patch") else None
            with pytest.raises(HTTPClientError) as err:
                await jp_fetch(
                    *API, *_concrete(path), method=method.upper(), body=body, headers=no_auth
                )
        assert err.value.code in (401, 403), (method, path, err.value.code)
        checked += 1
    assert checked == sum(1 for _ in endpoints(ROUTES)) >= 25


async def test_a_wrong_jupyter_token_is_refused(api: Api) -> None:
    status, _ = await api("GET", "flow_runs", headers={"Authorization": "token wrong"})
    assert status == 403
    status, body = await api(
        "GET", "flow_runs", headers={"Authorization": f"token nbflow-run.{uuid4()}.deadbeef"}
    )
    assert status == 403
    assert "run token" in body["message"]


@pytest.fixture
def two_runs(nbflow_app: NbflowApp) -> tuple[Any, Any]:
    client = nbflow_app.client
    flow = client.create_flow(Flow(name="tokens"))
    mine = client.create_flow_run(FlowRunCreate(flow_id=flow.id, state=Scheduled()))
    other = client.create_flow_run(FlowRunCreate(flow_id=flow.id, state=Scheduled()))
    return mine, other


async def test_run_token_reports_only_on_its_run(
    api: Api, nbflow_app: NbflowApp, two_runs: tuple[Any, Any]
) -> None:
    mine, other = two_runs
    auth = {"Authorization": f"token {nbflow_app.mint_run_token(mine.id)}"}

    # Its own run: read, report states, heartbeat, task runs, logs, artifacts.
    assert (await api("GET", "flow_runs", str(mine.id), headers=auth))[0] == 200
    status, result = await api(
        "POST",
        "flow_runs",
        str(mine.id),
        "set_state",
        body={"state": json.loads(Running().model_dump_json())},
        headers=auth,
    )
    assert (status, result["status"]) == (200, "ACCEPT")
    assert (await api("POST", "flow_runs", str(mine.id), "heartbeat", headers=auth))[0] == 204
    task_run = {"id": str(uuid4()), "flow_run_id": str(mine.id), "name": "t", "task_key": "t"}
    assert (await api("POST", "task_runs", "batch", body={"task_runs": [task_run]}, headers=auth))[
        0
    ] == 204
    log = {"flow_run_id": str(mine.id), "message": "hello"}
    assert (await api("POST", "logs", "batch", body={"logs": [log]}, headers=auth))[0] == 204
    status, page = await api("GET", "logs", params={"flow_run_id": str(mine.id)}, headers=auth)
    assert status == 200 and [x["message"] for x in page["logs"]] == ["hello"]
    status, _ = await api("GET", "task_runs", params={"flow_run_ids": str(mine.id)}, headers=auth)
    assert status == 200
    artifact = {"flow_run_id": str(mine.id), "key": "out", "data": {"a": 1}}
    assert (await api("POST", "artifacts", body=artifact, headers=auth))[0] == 201
    assert (await api("GET", "flows", str(mine.flow_id), headers=auth))[0] == 200

    # Another run: refused for every kind of access.
    o = str(other.id)
    refused = [
        await api("GET", "flow_runs", o, headers=auth),
        await api("PATCH", "flow_runs", o, body={"name": "x"}, headers=auth),
        await api(
            "POST",
            "flow_runs",
            o,
            "set_state",
            body={"state": json.loads(Running().model_dump_json())},
            headers=auth,
        ),
        await api("POST", "flow_runs", o, "heartbeat", headers=auth),
        await api("GET", "flow_runs", o, "states", headers=auth),
        await api("GET", "flow_runs", o, "graph", headers=auth),
        await api("GET", "flow_runs", o, "output", headers=auth),
        await api(
            "POST",
            "task_runs",
            "batch",
            body={"task_runs": [{**task_run, "id": str(uuid4()), "flow_run_id": o}]},
            headers=auth,
        ),
        await api(
            "POST",
            "task_runs",
            "batch",
            body={
                "states": [
                    {"task_run_id": str(uuid4()), "state": json.loads(Running().model_dump_json())}
                ]
            },
            headers=auth,
        ),
        await api(
            "POST", "logs", "batch", body={"logs": [{**log, "flow_run_id": o}]}, headers=auth
        ),
        await api("GET", "logs", params={"flow_run_id": o}, headers=auth),
        await api("GET", "task_runs", params={"flow_run_ids": o}, headers=auth),
        await api("GET", "task_runs", headers=auth),
        await api("GET", "artifacts", params={"flow_run_id": o}, headers=auth),
        await api("GET", "artifacts", headers=auth),
        await api("POST", "artifacts", body={**artifact, "flow_run_id": o}, headers=auth),
    ]
    assert [s for s, _ in refused] == [403] * len(refused)
    assert nbflow_app.client.read_flow_run(other.id).state.type == "SCHEDULED"

    # Listing, creating, cancelling, deleting: never with a run token.
    for path, method, spec in endpoints(ROUTES):
        if spec.run_access is not RunAccess.NONE or path.endswith("/events"):
            continue
        parts = [str(mine.id) if p == ANY_ID else p for p in _concrete(path)]
        status, _ = await api(method.upper(), *parts, headers=auth)
        assert status == 403, (method, path)
    assert nbflow_app.client.read_flow_run(mine.id).state.type == "RUNNING"


async def test_run_token_reads_only_its_own_deployment(
    api: Api, nbflow_app: NbflowApp, jp_root_dir: Path
) -> None:
    client = nbflow_app.client
    flow = client.create_flow(Flow(name="deployed"))
    status, dep = await api(
        "POST",
        "deployments",
        body={"flow_id": str(flow.id), "name": "d", "notebook": make_notebook()},
    )
    assert status == 201, dep
    status, dep2 = await api(
        "POST",
        "deployments",
        body={"flow_id": str(flow.id), "name": "d2", "notebook": make_notebook()},
    )
    status, run = await api("POST", "deployments", dep["id"], "runs", body={})
    assert status == 201
    auth = {"Authorization": f"token {nbflow_app.mint_run_token(run['id'])}"}
    status, got = await api("GET", "deployments", dep["id"], headers=auth)
    assert status == 200 and "".join(got["notebook"]["cells"][0]["source"]) == "x = 1"
    assert (await api("GET", "deployments", dep2["id"], headers=auth))[0] == 403


async def test_run_token_cannot_open_the_event_stream(
    jp_ws_fetch: Any, nbflow_app: NbflowApp
) -> None:
    token = nbflow_app.mint_run_token(uuid4())
    with pytest.raises(HTTPClientError) as err:
        await jp_ws_fetch(*API, "events", headers={"Authorization": f"token {token}"})
    assert err.value.code == 403
