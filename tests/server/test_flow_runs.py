"""Flow runs, task runs, logs and artifacts through the REST API of a live server."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from nbflow.states import AwaitingRetry, Completed, Failed, Pending, Running, Scheduled, now
from nbflow_server import NbflowApp
from tests.server.helpers import Api, make_notebook


def state(s: Any) -> dict[str, Any]:
    return json.loads(s.model_dump_json())


async def _flow(api: Api, name: str = "f") -> dict[str, Any]:
    return (await api("POST", "flows", body={"name": name}))[1]


async def test_create_filter_paginate_count(api: Api) -> None:
    flow_a, flow_b = await _flow(api, "a"), await _flow(api, "b")
    created = []
    for i in range(5):
        flow = flow_a if i < 3 else flow_b
        status, run = await api(
            "POST",
            "flow_runs",
            body={"flow_id": flow["id"], "name": f"run-{i}", "state": state(Scheduled())},
        )
        assert status == 201, run
        created.append(run)
    status, page = await api("GET", "flow_runs", params={"limit": 2})
    assert status == 200 and page["total"] == 5 and len(page["items"]) == 2
    assert [r["name"] for r in page["items"]] == ["run-4", "run-3"]
    _, page2 = await api("GET", "flow_runs", params={"limit": 2, "offset": 4})
    assert [r["name"] for r in page2["items"]] == ["run-0"]
    _, by_flow = await api("GET", "flow_runs", params={"flow_ids": flow_b["id"]})
    assert by_flow["total"] == 2
    await api("POST", "flow_runs", created[0]["id"], "set_state", body={"state": state(Pending())})
    _, by_state = await api(
        "GET", "flow_runs", params=[("state_types", "PENDING"), ("state_types", "RUNNING")]
    )
    assert [r["id"] for r in by_state["items"]] == [created[0]["id"]]
    future = (now() + timedelta(hours=1)).isoformat()
    _, none = await api("GET", "flow_runs", params={"start_after": future})
    assert none["total"] == 0
    status, body = await api("GET", "flow_runs", params={"state_types": "DONE"})
    assert status == 400 and body["errors"][0]["field"].startswith("query.state_types")
    status, body = await api("GET", "flow_runs", params={"colour": "red"})
    assert status == 400 and body["errors"][0]["field"] == "query.colour"
    # A browser's cache-busting key (JupyterLab adds ?<timestamp> to GETs) is not an input.
    status, busted = await api("GET", "flow_runs", params={"limit": 2, "1763844000000": "1"})
    assert status == 200 and len(busted["items"]) == 2, busted


async def test_set_state_goes_through_the_gate(api: Api, nbflow_app: NbflowApp) -> None:
    flow = await _flow(api)
    _, run = await api(
        "POST", "flow_runs", body={"flow_id": flow["id"], "state": state(Scheduled())}
    )
    rid = run["id"]
    claim = state(Pending())
    status, result = await api("POST", "flow_runs", rid, "set_state", body={"state": claim})
    assert (status, result["status"]) == (200, "ACCEPT")
    # The same transition id again is a safe retry; a second claim is refused.
    _, again = await api("POST", "flow_runs", rid, "set_state", body={"state": claim})
    assert again["status"] == "ACCEPT"
    _, second = await api("POST", "flow_runs", rid, "set_state", body={"state": state(Pending())})
    assert second["status"] == "ABORT"
    await api("POST", "flow_runs", rid, "set_state", body={"state": state(Running())})
    _, done = await api("POST", "flow_runs", rid, "set_state", body={"state": state(Completed())})
    assert done["status"] == "ACCEPT"
    _, late = await api("POST", "flow_runs", rid, "set_state", body={"state": state(Running())})
    assert late["status"] == "REJECT" and late["state"]["type"] == "COMPLETED"
    _, states = await api("GET", "flow_runs", rid, "states")
    assert [s["type"] for s in states["items"]] == [
        "SCHEDULED",
        "PENDING",
        "RUNNING",
        "COMPLETED",
    ]
    status, body = await api("POST", "flow_runs", rid, "set_state", body={"state": {"type": "X"}})
    assert status == 400 and body["errors"][0]["field"] == "body.state.type"
    status, _ = await api("POST", "flow_runs", str(uuid4()), "set_state", body={"state": claim})
    assert status == 404


async def test_cancel(api: Api) -> None:
    flow = await _flow(api)

    async def new_run(*states: Any) -> str:
        _, run = await api(
            "POST", "flow_runs", body={"flow_id": flow["id"], "state": state(Scheduled())}
        )
        for s in states:
            await api("POST", "flow_runs", run["id"], "set_state", body={"state": state(s)})
        return str(run["id"])

    scheduled = await new_run()
    status, result = await api("POST", "flow_runs", scheduled, "cancel")
    assert status == 200 and result["state"]["type"] == "CANCELLED"
    running = await new_run(Pending(), Running())
    status, result = await api("POST", "flow_runs", running, "cancel")
    assert status == 200 and result["state"]["type"] == "CANCELLING"
    finished = await new_run(Pending(), Running(), Completed())
    status, body = await api("POST", "flow_runs", finished, "cancel")
    assert status == 409 and "Completed" in body["message"]


async def test_cancel_of_a_claimed_run_not_yet_launched_is_immediate_with_a_message(
    api: Api,
) -> None:
    flow = await _flow(api)
    _, run = await api("POST", "flow_runs", body={"flow_id": flow["id"], "state": state(Pending())})
    status, result = await api(
        "POST", "flow_runs", run["id"], "cancel", body={"message": "wrong data"}
    )
    assert status == 200 and result["state"]["type"] == "CANCELLED"
    assert result["state"]["message"] == "wrong data"
    # a second cancel of the now finished run is refused, naming why
    status, body = await api("POST", "flow_runs", run["id"], "cancel")
    assert status == 409 and "already finished" in body["message"]


NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}
TWO_PARAMETERS = {
    "type": "object",
    "properties": {
        "region": {"type": "string", "default": "EU"},
        "n": {"type": "integer", "default": 3},
    },
    "additionalProperties": False,
}


async def test_a_run_with_bad_parameters_is_refused_at_creation(api: Api) -> None:
    # Reproduction: run-now with {"x": 1} on a notebook without parameters was accepted
    # (201) and then failed "not started".
    _, bare = await api("POST", "flows", body={"name": "bare", "parameters_schema": NO_PARAMETERS})
    status, body = await api(
        "POST", "flow_runs", body={"flow_id": bare["id"], "parameters": {"x": 1}, "mode": "batch"}
    )
    assert status == 400 and body["errors"][0]["field"] == "body.parameters.x", body
    _, dep = await api(
        "POST",
        "deployments",
        body={"flow_id": bare["id"], "name": "d", "notebook": make_notebook()},
    )
    status, body = await api(
        "POST", "deployments", dep["id"], "runs", body={"parameters": {"x": 1}}
    )
    assert status == 400 and body["errors"][0]["field"] == "body.parameters.x", body
    _, typed = await api(
        "POST", "flows", body={"name": "typed", "parameters_schema": TWO_PARAMETERS}
    )
    status, body = await api(
        "POST",
        "flow_runs",
        body={"flow_id": typed["id"], "parameters": {"n": "three"}, "mode": "batch"},
    )
    assert status == 400 and body["errors"][0]["field"] == "body.parameters.n", body
    _, page = await api("GET", "flow_runs")
    assert page["total"] == 0


async def test_a_run_keeps_its_own_job_variables_and_gets_the_default_runner(
    api: Api, nbflow_app: NbflowApp
) -> None:
    flow = await _flow(api)
    status, run = await api(
        "POST",
        "flow_runs",
        body={"flow_id": flow["id"], "mode": "batch", "job_variables": {"env": {"A": "1"}}},
    )
    assert status == 201
    assert run["runner"] == nbflow_app.default_runner
    assert run["job_variables"] == {"env": {"A": "1"}}  # runner defaults merge at claim time


async def test_retry_creates_a_new_linked_run(api: Api) -> None:
    _, flow = await api(
        "POST", "flows", body={"name": "typed", "parameters_schema": TWO_PARAMETERS}
    )
    _, old = await api(
        "POST",
        "flow_runs",
        body={
            "flow_id": flow["id"],
            "mode": "batch",
            "parameters": {"region": "US"},
            "job_variables": {"cpu": "2"},
            "state": state(Pending()),
        },
    )
    status, body = await api("POST", "flow_runs", old["id"], "retry", body={})
    assert status == 409 and "only a finished run" in body["message"]
    for s in (Running(), Failed(message="boom")):
        await api("POST", "flow_runs", old["id"], "set_state", body={"state": state(s)})
    status, body = await api(
        "POST", "flow_runs", old["id"], "retry", body={"parameters": {"n": "x"}}
    )
    assert status == 400 and body["errors"][0]["field"] == "body.parameters.n", body
    status, new = await api("POST", "flow_runs", old["id"], "retry", body={"parameters": {"n": 7}})
    assert status == 201, new
    assert new["id"] != old["id"] and new["retry_of"] == old["id"]
    assert new["parameters"] == {"region": "US", "n": 7}
    assert new["job_variables"] == {"cpu": "2"} and new["runner"] == old["runner"]
    assert new["state"]["type"] == "SCHEDULED"
    _, stays = await api("GET", "flow_runs", old["id"])
    assert stays["state"]["type"] == "FAILED"
    # a finished run never moves back; only force (a user's, never a run token's) may
    status, refused = await api(
        "POST", "flow_runs", old["id"], "set_state", body={"state": state(AwaitingRetry())}
    )
    assert status == 200 and refused["status"] == "REJECT"
    status, _ = await api("POST", "flow_runs", str(uuid4()), "retry", body={})
    assert status == 404


async def test_http_client_cancel_and_retry_mirror_the_lifecycle(
    api: Api, jp_serverapp: Any, http_server_client: Any, jp_http_port: int
) -> None:
    import asyncio

    from nbflow.client.http import HTTPClient
    from nbflow.exceptions import TransitionRejected

    _, flow = await api(
        "POST", "flows", body={"name": "typed", "parameters_schema": TWO_PARAMETERS}
    )
    _, run = await api("POST", "flow_runs", body={"flow_id": flow["id"], "mode": "batch"})
    url = f"http://127.0.0.1:{jp_http_port}{jp_serverapp.base_url}nbflow/api/v1"
    client = HTTPClient(url, token=jp_serverapp.identity_provider.token)
    loop = asyncio.get_running_loop()
    try:
        result = await loop.run_in_executor(
            None, lambda: client.cancel_flow_run(run["id"], message="no longer needed")
        )
        assert result.state is not None and result.state.type.value == "CANCELLED"
        with pytest.raises(TransitionRejected):
            await loop.run_in_executor(None, lambda: client.cancel_flow_run(run["id"]))
        retried = await loop.run_in_executor(
            None, lambda: client.retry_flow_run(run["id"], parameters={"n": 1})
        )
        assert str(retried.retry_of) == run["id"] and retried.parameters == {"n": 1}
    finally:
        client.close()


async def test_update_heartbeat_delete(api: Api) -> None:
    flow = await _flow(api)
    _, run = await api("POST", "flow_runs", body={"flow_id": flow["id"]})
    status, updated = await api(
        "PATCH", "flow_runs", run["id"], body={"infrastructure_id": "pid-1", "tags": ["x"]}
    )
    assert status == 200 and updated["infrastructure_id"] == "pid-1" and updated["tags"] == ["x"]
    status, body = await api("PATCH", "flow_runs", run["id"], body={"state": "RUNNING"})
    assert status == 400 and body["errors"][0]["field"] == "body.state"
    assert (await api("POST", "flow_runs", run["id"], "heartbeat"))[0] == 204
    assert (await api("GET", "flow_runs", run["id"]))[1]["heartbeat"] is not None
    assert (await api("DELETE", "flow_runs", run["id"]))[0] == 204
    assert (await api("GET", "flow_runs", run["id"]))[0] == 404


async def test_task_runs_graph_logs(api: Api) -> None:
    flow = await _flow(api)
    _, run = await api("POST", "flow_runs", body={"flow_id": flow["id"]})
    rid = run["id"]
    a, b, c = (str(uuid4()) for _ in range(3))
    task_runs = [
        {"id": a, "flow_run_id": rid, "name": "extract", "task_key": "cell-1"},
        {"id": b, "flow_run_id": rid, "name": "clean", "task_key": "cell-2", "upstream": [a]},
        {"id": c, "flow_run_id": rid, "name": "report", "task_key": "cell-3", "upstream": [a, b]},
    ]
    states = [{"task_run_id": t, "state": state(Running())} for t in (a, b, c)]
    status, _ = await api(
        "POST", "task_runs", "batch", body={"task_runs": task_runs, "states": states}
    )
    assert status == 204
    _, listed = await api("GET", "task_runs", params={"flow_run_ids": rid})
    assert {t["name"] for t in listed["items"]} == {"extract", "clean", "report"}
    _, history = await api("GET", "task_runs", a, "states")
    assert [s["type"] for s in history["items"]] == ["RUNNING"]
    status, graph = await api("GET", "flow_runs", rid, "graph")
    assert status == 200 and len(graph["nodes"]) == 3
    assert {(e["upstream"], e["downstream"]) for e in graph["edges"]} == {(a, b), (a, c), (b, c)}

    logs = [{"flow_run_id": rid, "message": f"line {i}"} for i in range(5)]
    assert (await api("POST", "logs", "batch", body={"logs": logs}))[0] == 204
    _, first = await api("GET", "logs", params={"flow_run_id": rid, "limit": 3})
    assert [x["message"] for x in first["logs"]] == ["line 0", "line 1", "line 2"]
    _, rest = await api("GET", "logs", params={"flow_run_id": rid, "cursor": first["cursor"]})
    assert [x["message"] for x in rest["logs"]] == ["line 3", "line 4"]
    _, empty = await api("GET", "logs", params={"flow_run_id": rid, "cursor": rest["cursor"]})
    assert empty["logs"] == [] and empty["cursor"] == rest["cursor"]
    status, body = await api("GET", "logs")
    assert status == 400 and body["errors"][0]["field"] == "query.flow_run_id"


async def test_output_notebook(api: Api, jp_root_dir: Path) -> None:
    flow = await _flow(api)
    _, run = await api("POST", "flow_runs", body={"flow_id": flow["id"]})
    rid = run["id"]
    assert (await api("GET", "flow_runs", rid, "output"))[0] == 404
    # An output path under the server root.
    (jp_root_dir / "out.ipynb").write_text(json.dumps(make_notebook(["z = 9"])))
    await api("PATCH", "flow_runs", rid, body={"output_path": "out.ipynb"})
    status, nb = await api("GET", "flow_runs", rid, "output")
    assert status == 200 and "".join(nb["cells"][0]["source"]) == "z = 9"
    # An artifact with the notebook inline wins.
    artifact = {
        "flow_run_id": rid,
        "key": "output",
        "kind": "notebook",
        "data": make_notebook(["w"]),
    }
    assert (await api("POST", "artifacts", body=artifact))[0] == 201
    _, nb = await api("GET", "flow_runs", rid, "output")
    assert "".join(nb["cells"][0]["source"]) == "w"
    _, arts = await api("GET", "artifacts", params={"flow_run_id": rid})
    assert [a["key"] for a in arts["items"]] == ["output"]
    # A partial output recorded locally: its data is a marker, the notebook is at the uri
    # (the run's own output file, named <run id>.ipynb: docs/security.md).
    (jp_root_dir / f"{rid}.ipynb").write_text(json.dumps(make_notebook(["p = 1"])))
    marker = {**artifact, "data": {"partial": True}, "uri": f"{rid}.ipynb"}
    assert (await api("POST", "artifacts", body=marker))[0] == 201
    _, nb = await api("GET", "flow_runs", rid, "output")
    assert "".join(nb["cells"][0]["source"]) == "p = 1"


async def test_output_outside_served_dirs_is_not_read(api: Api, tmp_path: Path) -> None:
    flow = await _flow(api)
    _, run = await api("POST", "flow_runs", body={"flow_id": flow["id"]})
    secret = tmp_path / "private.ipynb"
    secret.write_text(json.dumps(make_notebook(["secret"])))
    await api("PATCH", "flow_runs", run["id"], body={"output_path": str(secret)})
    assert (await api("GET", "flow_runs", run["id"], "output"))[0] == 404
