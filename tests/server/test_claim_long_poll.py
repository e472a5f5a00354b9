"""``POST /flow_runs/claim`` with ``wait_seconds``: a worker's long poll.

A held claim answers with a run that became due while it waited, an empty list when none
did, and refuses a wait beyond the limit naming the field.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from nbflow.states import Scheduled
from nbflow_server import NbflowApp
from tests.server.helpers import Api


async def _flow(api: Api, name: str) -> dict[str, Any]:
    status, flow = await api("POST", "flows", body={"name": name})
    assert status in (200, 201), flow
    return flow  # type: ignore[no-any-return]


async def test_a_held_claim_takes_the_run_that_becomes_due(api: Api, nbflow_app: NbflowApp) -> None:
    flow = await _flow(api, "long_poll")
    body = {"runners": ["lp-runner"], "claimer": "test worker", "wait_seconds": 15}
    held = asyncio.ensure_future(api("POST", "flow_runs", "claim", body=body))
    await asyncio.sleep(0.5)
    assert not held.done(), "nothing was due: the claim must be held"
    status, run = await api(
        "POST",
        "flow_runs",
        body={
            "flow_id": flow["id"],
            "runner": "lp-runner",
            "mode": "batch",
            "state": json.loads(Scheduled().model_dump_json()),
        },
    )
    assert status == 201, run
    status, claimed = await held
    assert status == 200, claimed
    assert [c["flow_run"]["id"] for c in claimed["items"]] == [run["id"]]
    assert claimed["items"][0]["flow_run"]["state"]["type"] == "PENDING"


async def test_a_held_claim_with_nothing_due_answers_empty(api: Api) -> None:
    body = {"runners": ["nobody-runs-this"], "claimer": "w", "wait_seconds": 0.3}
    status, claimed = await api("POST", "flow_runs", "claim", body=body)
    assert status == 200 and claimed["items"] == []


async def test_a_wait_beyond_the_limit_is_refused_naming_the_field(api: Api) -> None:
    for wait in (-1, 21, "soon"):
        body = {"runners": ["r"], "claimer": "w", "wait_seconds": wait}
        status, answer = await api("POST", "flow_runs", "claim", body=body)
        assert status == 400, answer
        assert answer["errors"][0]["field"] == "body.wait_seconds"
