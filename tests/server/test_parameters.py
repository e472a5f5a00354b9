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


INJECTED = "x=1;import os;os.system('touch pwned')#"


async def test_flow_schemas_are_checked_at_registration(api: Api) -> None:
    bad = {
        "properties.x.type": {"properties": {"x": {"type": 5}}},
        "properties.x.pattern": {"properties": {"x": {"type": "string", "pattern": "^(a+)+$"}}},
        "patternProperties": {"patternProperties": {"^(a+)+$": {}}},
        "properties.x.items.pattern": {
            "properties": {"x": {"type": "array", "items": {"pattern": "a"}}}
        },
        "properties.x.$ref": {"properties": {"x": {"$ref": "https://example.org/s.json"}}},
        f"properties.{INJECTED}": {"properties": {INJECTED: {"type": "integer"}}},
        "properties.class": {"properties": {"class": {}}},
        "type": {"type": "array"},
    }
    for where, schema in bad.items():
        status, body = await api("POST", "flows", body={"name": "bad", "parameters_schema": schema})
        assert status == 400, (where, body)
        assert body["errors"][0]["field"] == f"body.parameters_schema.{where}", body
    status, flows = await api("GET", "flows")
    assert status == 200 and flows["items"] == []
    # A parameter may be *named* pattern: only the keyword is refused.
    status, flow = await api(
        "POST",
        "flows",
        body={"name": "ok", "parameters_schema": {"properties": {"pattern": {"type": "string"}}}},
    )
    assert status == 201, flow


async def test_a_flow_without_parameters_takes_none(api: Api) -> None:
    # The issue's reproduction: run-now with {"x": 1} was accepted, then failed "not started".
    _, flow = await api("POST", "flows", body={"name": "plain"})
    status, dep = await api(
        "POST",
        "deployments",
        body={"flow_id": flow["id"], "name": "d", "notebook": make_notebook()},
    )
    assert status == 201, dep
    status, body = await api(
        "POST", "deployments", dep["id"], "runs", body={"parameters": {"x": 1}}
    )
    assert status == 400 and body["errors"][0]["field"] == "body.parameters.x"
    assert "flow 'plain' takes no parameters" in body["message"]
    status, run = await api("POST", "deployments", dep["id"], "runs", body={})
    assert status == 201 and run["parameters"] == {}


async def test_parameter_names_must_be_identifiers_in_runs_and_deployments(api: Api) -> None:
    flow, dep = await _setup(api)
    for name in (INJECTED, "class", "a b"):
        status, body = await api(
            "POST", "flow_runs", body={"flow_id": flow["id"], "parameters": {name: 1}}
        )
        assert status == 400 and body["errors"][0]["field"] == f"body.parameters.{name}"
        assert "is not a valid parameter name" in body["message"]
        status, body = await api("PATCH", "deployments", dep["id"], body={"parameters": {name: 1}})
        assert status == 400 and "is not a valid parameter name" in body["message"]
    status, runs = await api("GET", "flow_runs")
    assert status == 200 and runs["total"] == 0


async def test_type_errors_name_the_parameter_and_the_expected_type(api: Api) -> None:
    flow, _ = await _setup(api)
    status, body = await api(
        "POST", "flow_runs", body={"flow_id": flow["id"], "parameters": {"day": "d", "n": "x"}}
    )
    assert status == 400 and body["errors"][0]["field"] == "body.parameters.n"
    assert "is not of type integer" in body["message"]
    assert "expected integer, as in the flow's default n = 3" in body["message"]
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    status, body = await api(
        "POST", "flow_runs", body={"flow_id": flow["id"], "parameters": {"day": deep}}
    )
    assert status == 400 and body["errors"][0]["field"] == "body.parameters.day"
