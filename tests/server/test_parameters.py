"""Run and deployment parameters are checked against the flow's parameters schema."""

from __future__ import annotations

from typing import Any

from tests.server.helpers import Api, make_notebook

SCHEMA = {
    "type": "object",
    "properties": {
        "region": {"type": "string", "default": "EU"},
        "day": {"type": "string"},
        "n": {"type": "integer", "default": 3},
    },
    "required": ["day"],
}


async def _setup(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    _, flow = await api("POST", "flows", body={"name": "typed", "parameters_schema": SCHEMA})
    status, dep = await api(
        "POST",
        "deployments",
        body={
            "flow_id": flow["id"],
            "name": "d",
            "notebook": make_notebook(),
            "parameters": {"n": 5},
        },
    )
    assert status == 201, dep
    return flow, dep


async def test_run_now_checks_names_types_and_required(api: Api) -> None:
    _, dep = await _setup(api)
    status, body = await api("POST", "deployments", dep["id"], "runs", body={"parameters": {}})
    assert status == 400 and body["errors"][0]["field"] == "body.parameters.day"
    assert "required" in body["message"]
    status, body = await api(
        "POST", "deployments", dep["id"], "runs", body={"parameters": {"day": "x", "regoin": "US"}}
    )
    assert status == 400 and body["errors"][0]["field"] == "body.parameters.regoin"
    assert "region" in body["message"]
    status, body = await api(
        "POST", "deployments", dep["id"], "runs", body={"parameters": {"day": "x", "n": "many"}}
    )
    assert status == 400 and body["errors"][0]["field"] == "body.parameters.n"
    status, run = await api(
        "POST", "deployments", dep["id"], "runs", body={"parameters": {"day": "x"}}
    )
    assert status == 201 and run["parameters"] == {"n": 5, "day": "x"}


async def test_deployment_defaults_and_ad_hoc_runs_are_checked(api: Api) -> None:
    flow, dep = await _setup(api)
    status, body = await api("PATCH", "deployments", dep["id"], body={"parameters": {"n": 1.5}})
    assert status == 400 and body["errors"][0]["field"] == "body.parameters.n"
    status, body = await api(
        "POST",
        "deployments",
        body={
            "flow_id": flow["id"],
            "name": "e",
            "notebook": make_notebook(),
            "parameters": {"zz": 1},
        },
    )
    assert status == 400 and body["errors"][0]["field"] == "body.parameters.zz"
    status, body = await api(
        "POST", "flow_runs", body={"flow_id": flow["id"], "parameters": {"n": 2}}
    )
    assert status == 400 and body["errors"][0]["field"] == "body.parameters.day"
    status, run = await api(
        "POST",
        "flow_runs",
        body={"flow_id": flow["id"], "parameters": {"day": "d"}, "mode": "batch"},
    )
    assert status == 201 and run["runner"] == "subprocess"
