"""The event-stream websocket pushes flow-run and task-run state changes."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from tornado.httpclient import HTTPClientError

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


async def test_a_reconnecting_client_catches_up_with_since(
    api: Api, jp_ws_fetch: Any, nbflow_app: NbflowApp, monkeypatch: Any
) -> None:
    from nbflow_server.handlers import events

    monkeypatch.setattr(events, "REPLAY_MARGIN", timedelta(0))

    def scheduled() -> dict[str, Any]:
        return json.loads(Scheduled().model_dump_json())  # type: ignore[no-any-return]

    _, flow = await api("POST", "flows", body={"name": "replay"})
    _, untouched = await api(
        "POST", "flow_runs", body={"flow_id": flow["id"], "state": scheduled()}
    )
    _, changed = await api("POST", "flow_runs", body={"flow_id": flow["id"], "state": scheduled()})
    await asyncio.sleep(0.05)
    # the client was away from here on: what it missed is one state change and one new run
    away_since = datetime.now(UTC)
    await asyncio.sleep(0.05)
    pending = json.loads(Pending().model_dump_json())
    await api("POST", "flow_runs", changed["id"], "set_state", body={"state": pending})
    _, created = await api("POST", "flow_runs", body={"flow_id": flow["id"], "state": scheduled()})

    ws = await jp_ws_fetch(*API, "events", params={"since": away_since.isoformat()})
    try:
        first, second = await _next(ws), await _next(ws)
        assert [first["flow_run_id"], second["flow_run_id"]] == [changed["id"], created["id"]]
        assert first["replay"] is True and first["state"]["type"] == "PENDING"
        # then the live stream, with nothing lost in between
        running = json.loads(Running().model_dump_json())
        await api("POST", "flow_runs", changed["id"], "set_state", body={"state": running})
        live = await _next(ws)
        assert live["flow_run_id"] == changed["id"] and live["state"]["type"] == "RUNNING"
        assert "replay" not in live
    finally:
        ws.close()
    assert untouched["id"] not in (first["flow_run_id"], second["flow_run_id"])


async def test_a_long_absence_is_truncated_and_said(
    api: Api, jp_ws_fetch: Any, nbflow_app: NbflowApp, monkeypatch: Any
) -> None:
    from nbflow_server.handlers import events

    monkeypatch.setattr(events, "REPLAY_LIMIT", 2)
    since = datetime.now(UTC) - timedelta(minutes=1)
    _, flow = await api("POST", "flows", body={"name": "replay_many"})
    for _ in range(3):
        await api("POST", "flow_runs", body={"flow_id": flow["id"]})
    ws = await jp_ws_fetch(*API, "events", params={"since": since.isoformat()})
    try:
        notice = await _next(ws)
        assert notice["type"] == "replay_truncated"
        assert [(await _next(ws))["replay"] for _ in range(2)] == [True, True]
    finally:
        ws.close()


async def test_a_malformed_since_is_a_400_naming_it(
    jp_ws_fetch: Any, nbflow_app: NbflowApp
) -> None:
    with pytest.raises(HTTPClientError) as failed:
        await jp_ws_fetch(*API, "events", params={"since": "yesterday"})
    assert failed.value.code == 400
