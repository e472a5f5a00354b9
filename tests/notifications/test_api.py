"""``/automations`` and ``/notification_deliveries`` through a live jupyter_server."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from nbflow.schemas import Flow, FlowRunCreate
from nbflow.states import Pending, Running
from nbflow_server import NbflowApp
from tests.server.helpers import Api


@pytest.fixture
def jp_server_config(tmp_path: Path) -> dict[str, Any]:
    """nbflow_server with its own store, services off, and an SMTP host to accept email rules."""
    return {
        "ServerApp": {"jpserver_extensions": {"nbflow_server": True}},
        "NbflowApp": {
            "db_url": f"sqlite:///{tmp_path / 'nbflow.db'}",
            "secret_file": str(tmp_path / "secret"),
            "services_enabled": False,
            "smtp_host": "127.0.0.1",
        },
    }


HOOK = {"action": "webhook", "webhook_url": "https://hooks.example.com/nbflow"}


async def test_create_list_read_deliveries_delete(api: Api) -> None:
    status, rule = await api(
        "POST",
        "automations",
        body={**HOOK, "on_states": ["failed", "CRASHED"], "match_kind": "flow",
              "match_value": "sales", "webhook_slack": True},
    )  # fmt: skip
    assert status == 201, rule
    assert rule["on_states"] == ["FAILED", "CRASHED"]
    assert rule["name"] == "flow sales: failed or crashed"
    status, email = await api(
        "POST", "automations", body={"action": "email", "email_to": ["ops@example.com"],
                                     "longer_than_seconds": 1800}
    )  # fmt: skip
    assert status == 201, email
    _, listed = await api("GET", "automations")
    assert [r["id"] for r in listed["items"]] == [rule["id"], email["id"]]
    _, read = await api("GET", "automations", rule["id"])
    assert read == rule
    assert await api("GET", "automations", rule["id"], "deliveries") == (200, {"items": []})
    assert await api("GET", "notification_deliveries") == (200, {"items": []})
    status, off = await api("PATCH", "automations", rule["id"], body={"enabled": False})
    assert (status, off["enabled"], off["on_states"]) == (200, False, ["FAILED", "CRASHED"])
    status, renamed = await api("PATCH", "automations", rule["id"], body={"name": "sales down"})
    assert (renamed["name"], renamed["enabled"]) == ("sales down", False)
    status, error = await api("PATCH", "automations", rule["id"], body={"webhook_url": "x"})
    assert status == 400 and error["errors"][0]["field"] == "body.webhook_url"
    status, error = await api("PATCH", "automations", rule["id"], body={"enabled": None})
    assert status == 400 and error["errors"][0]["field"] == "body.enabled"
    assert (await api("PATCH", "automations", str(uuid4()), body={"enabled": True}))[0] == 404
    assert (await api("DELETE", "automations", rule["id"]))[0] == 204
    assert (await api("GET", "automations", rule["id"]))[0] == 404
    assert (await api("DELETE", "automations", rule["id"]))[0] == 404
    assert (await api("GET", "automations", str(uuid4()), "deliveries"))[0] == 404


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({**HOOK, "on_states": ["FAILD"]}, "body.on_states", ["'FAILD'", "FAILED"]),
        ({"action": "webhook", "webhook_url": "file:///etc/passwd", "on_states": ["FAILED"]},
         "body.webhook_url", ["file:///etc/passwd", "http(s)"]),
        ({"action": "email", "email_to": ["not-an-address"], "on_states": ["FAILED"]},
         "body.email_to", ["'not-an-address'", "name@example.com"]),
        ({**HOOK, "longer_than_seconds": -60}, "body.longer_than_seconds", ["-60", "positive"]),
        ({**HOOK, "on_states": ["FAILED"], "match_kind": "deployment"}, "body",
         ["match_value"]),
        ({**HOOK, "on_states": ["FAILED"], "colour": "red"}, "body.colour", ["Extra"]),
    ],
)  # fmt: skip
async def test_bad_rules_are_400_naming_the_field(
    api: Api, body: dict[str, Any], field: str, words: list[str]
) -> None:
    status, error = await api("POST", "automations", body=body)
    assert status == 400, error
    assert error["errors"][0]["field"] == field, error
    for word in words:
        assert word in error["message"], error
    _, listed = await api("GET", "automations")
    assert listed["items"] == []


async def test_an_email_rule_needs_an_smtp_server(api: Api, nbflow_app: NbflowApp) -> None:
    nbflow_app.smtp_host = ""
    status, error = await api(
        "POST",
        "automations",
        body={"action": "email", "email_to": ["a@b.io"], "on_states": ["FAILED"]},
    )
    assert status == 400
    assert error["errors"][0]["field"] == "body.action"
    assert "smtp_host" in error["message"]


async def test_a_run_token_opens_no_automation_route(api: Api, nbflow_app: NbflowApp) -> None:
    _, rule = await api("POST", "automations", body={**HOOK, "on_states": ["FAILED"]})
    client = nbflow_app.client
    flow = client.create_flow(Flow(name="tok"))
    run = client.create_flow_run(FlowRunCreate(flow_id=flow.id, state=Pending()))
    client.set_flow_run_state(run.id, Running())
    token = {"Authorization": f"token {nbflow_app.mint_run_token(run.id)}"}
    for method, path, body in [
        ("GET", ("automations",), None),
        ("POST", ("automations",), {**HOOK, "on_states": ["FAILED"]}),
        ("GET", ("automations", rule["id"]), None),
        ("PATCH", ("automations", rule["id"]), {"enabled": False}),
        ("DELETE", ("automations", rule["id"]), None),
        ("GET", ("automations", rule["id"], "deliveries"), None),
        ("GET", ("notification_deliveries",), None),
    ]:
        status, error = await api(method, *path, body=body, headers=token)
        assert status == 403, (method, path, error)
        assert "run token" in error["message"]
    _, listed = await api("GET", "automations")
    assert [r["id"] for r in listed["items"]] == [rule["id"]]


async def test_the_openapi_document_lists_the_routes(api: Api) -> None:
    _, doc = await api("GET", "openapi.json")
    paths = doc["paths"]
    assert set(paths["/nbflow/api/v1/automations"]) >= {"get", "post"}
    assert set(paths["/nbflow/api/v1/automations/{automation_id}"]) >= {"get", "delete"}
    assert "get" in paths["/nbflow/api/v1/automations/{automation_id}/deliveries"]
    assert "get" in paths["/nbflow/api/v1/notification_deliveries"]
