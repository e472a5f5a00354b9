"""The event-stream websocket pushes flow-run and task-run state changes."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import uuid4

from nbflow.states import Pending, Running, Scheduled
from nbflow_server import NbflowApp
from tests.server.helpers import API, Api


async def _next(ws: Any) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.read_message(), timeout=30)
    assert message is not None, "the event stream closed"
    return json.loads(message)  # type: ignore[no-any-return]


async def test_state_changes_are_pushed(api: Api, jp_ws_fetch: Any, nbflow_app: NbflowApp) -> None:
    ws = await jp_ws_fetch(*API, "events")
    try:
        _, flow = await api("POST", "flows", body={"name": "ev"})
        _, run = await api(
            "POST",
            "flow_runs",
            body={"flow_id": flow["id"], "state": json.loads(Scheduled().model_dump_json())},
        )
        event = await _next(ws)
        assert event["type"] == "flow_run_state" and event["flow_run_id"] == run["id"]
        assert event["state"]["type"] == "SCHEDULED"

        pending = json.loads(Pending().model_dump_json())
        await api("POST", "flow_runs", run["id"], "set_state", body={"state": pending})
        event = await _next(ws)
        assert event["state"]["type"] == "PENDING" and event["flow_run"]["id"] == run["id"]

        # A refused proposal publishes nothing; the next event is the task run.
        await api(
            "POST",
            "flow_runs",
            run["id"],
            "set_state",
            body={"state": pending | {"id": str(uuid4())}},
        )
        task_run = {"id": str(uuid4()), "flow_run_id": run["id"], "name": "t", "task_key": "k"}
        running = json.loads(Running().model_dump_json())
        await api(
            "POST",
            "task_runs",
            "batch",
            body={
                "task_runs": [task_run],
                "states": [{"task_run_id": task_run["id"], "state": running}],
            },
        )
        event = await _next(ws)
        assert event["type"] == "task_run_state" and event["task_run"]["id"] == task_run["id"]
        assert event["state"]["type"] == "RUNNING"
    finally:
        ws.close()


async def test_stream_filtered_to_one_run(
    api: Api, jp_ws_fetch: Any, nbflow_app: NbflowApp
) -> None:
    _, flow = await api("POST", "flows", body={"name": "ev"})
    scheduled = json.loads(Scheduled().model_dump_json())
    _, watched = await api("POST", "flow_runs", body={"flow_id": flow["id"]})
    ws = await jp_ws_fetch(*API, "events", params={"flow_run_id": watched["id"]})
    try:
        await api("POST", "flow_runs", body={"flow_id": flow["id"], "state": scheduled})
        fresh = json.loads(Scheduled().model_dump_json())
        await api("POST", "flow_runs", watched["id"], "set_state", body={"state": fresh})
        event = await _next(ws)
        assert event["flow_run_id"] == watched["id"]
    finally:
        ws.close()
