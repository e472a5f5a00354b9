"""Flows and deployments through the REST API of a live server."""

from __future__ import annotations

import json
import os
from pathlib import Path
from uuid import uuid4

import pytest

from nbflow_server import NbflowApp
from tests.server.helpers import Api, make_notebook


async def test_flows_register_upsert_list_read(api: Api) -> None:
    status, flow = await api("POST", "flows", body={"name": "sales", "tags": ["a"]})
    assert status == 201 and flow["name"] == "sales"
    status, again = await api("POST", "flows", body={"name": "sales", "description": "v2"})
    assert status == 201 and again["id"] == flow["id"] and again["description"] == "v2"
    await api("POST", "flows", body={"name": "another"})
    status, page = await api("GET", "flows", params={"limit": 10})
    assert status == 200 and [f["name"] for f in page["items"]] == ["another", "sales"]
    status, page = await api("GET", "flows", params={"limit": 1, "offset": 1})
    assert [f["name"] for f in page["items"]] == ["sales"]
    assert (await api("GET", "flows", flow["id"]))[1]["name"] == "sales"
    assert (await api("GET", "flows", params={"name": "sales"}))[1]["items"][0]["id"] == flow["id"]


async def test_errors_name_the_field(api: Api) -> None:
    status, body = await api("POST", "flows", body={"name": ""})
    assert status == 400
    assert body["errors"][0]["field"] == "body.name"
    status, body = await api("POST", "flows", body={"name": "x", "colour": "red"})
    assert status == 400 and body["errors"][0]["field"] == "body.colour"
    status, body = await api("GET", "flows", params={"limit": "lots"})
    assert status == 400 and body["errors"][0]["field"] == "query.limit"
    status, body = await api("GET", "flows", params={"limti": "3"})
    assert status == 400 and body["errors"][0]["field"] == "query.limti"
    assert "limit" in body["message"]
    status, body = await api("GET", "flows", "not-a-uuid")
    assert status == 400 and body["errors"][0]["field"] == "flow_id"
    status, body = await api("GET", "flows", str(uuid4()))
    assert status == 404 and "not found" in body["message"]
    status, body = await api("GET", "flows", params={"name": "nope"})
    assert status == 404


async def test_deploy_a_notebook_from_a_path_under_the_root(
    api: Api, jp_root_dir: Path, nbflow_app: NbflowApp
) -> None:
    (jp_root_dir / "work").mkdir()
    (jp_root_dir / "work" / "daily.ipynb").write_text(json.dumps(make_notebook(["y = 2"])))
    schema = {"properties": {"region": {"type": "string"}}}
    _, flow = await api("POST", "flows", body={"name": "daily", "parameters_schema": schema})
    status, dep = await api(
        "POST",
        "deployments",
        body={
            "flow_id": flow["id"],
            "name": "prod",
            "notebook_path": "work/./daily.ipynb",
            "parameters": {"region": "EU"},
            "schedules": [{"cron": "0 6 * * *", "timezone": "Europe/Berlin"}],
        },
    )
    assert status == 201, dep
    assert dep["notebook_path"] == "work/daily.ipynb"
    assert "".join(dep["notebook"]["cells"][0]["source"]) == "y = 2"
    assert dep["runner"] == nbflow_app.default_runner
    # The snapshot is stored: changing the file does not change the deployment.
    (jp_root_dir / "work" / "daily.ipynb").write_text(json.dumps(make_notebook(["y = 3"])))
    status, read = await api("GET", "deployments", dep["id"])
    assert "".join(read["notebook"]["cells"][0]["source"]) == "y = 2"
    status, page = await api("GET", "deployments", params={"flow_id": flow["id"]})
    assert [d["id"] for d in page["items"]] == [dep["id"]]


async def test_deploy_uploaded_notebook_pause_resume_run_delete(api: Api) -> None:
    schema = {"properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
    _, flow = await api("POST", "flows", body={"name": "up", "parameters_schema": schema})
    status, dep = await api(
        "POST",
        "deployments",
        body={
            "flow_id": flow["id"],
            "name": "d",
            "notebook": make_notebook(),
            "runner": "docker",
            "parameters": {"a": 1, "b": 2},
            "job_variables": {"image": "python:3.12"},
        },
    )
    assert status == 201 and dep["runner"] == "docker"
    status, paused = await api("PATCH", "deployments", dep["id"], body={"paused": True})
    assert status == 200 and paused["paused"] is True
    status, resumed = await api("PATCH", "deployments", dep["id"], body={"paused": False})
    assert resumed["paused"] is False and resumed["parameters"] == {"a": 1, "b": 2}
    status, body = await api("PATCH", "deployments", dep["id"], body={"pasued": True})
    assert status == 400 and body["errors"][0]["field"] == "body.pasued"
    status, body = await api("PATCH", "deployments", dep["id"], body={"paused": None})
    assert status == 400 and body["errors"][0]["field"] == "body.paused"
    status, cleared = await api(
        "PATCH", "deployments", dep["id"], body={"concurrency_limit": None, "description": "x"}
    )
    assert status == 200 and cleared["concurrency_limit"] is None and cleared["description"] == "x"

    status, run = await api(
        "POST", "deployments", dep["id"], "runs", body={"parameters": {"b": 3}, "tags": ["now"]}
    )
    assert status == 201, run
    assert run["state"]["type"] == "SCHEDULED"
    assert run["parameters"] == {"a": 1, "b": 3}
    assert run["deployment_id"] == dep["id"] and run["runner"] == "docker"
    # the run's own job variables: the runner defaults and the deployment's merge at claim
    assert run["job_variables"] == {}
    assert run["mode"] == "batch"

    assert (await api("DELETE", "deployments", dep["id"]))[0] == 204
    assert (await api("GET", "deployments", dep["id"]))[0] == 404


async def test_bad_notebooks_are_refused(api: Api, jp_root_dir: Path) -> None:
    _, flow = await api("POST", "flows", body={"name": "bad"})
    base = {"flow_id": flow["id"], "name": "d"}
    status, body = await api("POST", "deployments", body={**base, "notebook": {"cells": 3}})
    assert status == 400 and body["errors"][0]["field"] == "body.notebook"
    status, body = await api("POST", "deployments", body=base)
    assert status == 400 and body["errors"][0]["field"] == "body.notebook_path"
    status, body = await api("POST", "deployments", body={**base, "notebook_path": "missing.ipynb"})
    assert status == 400 and "does not exist" in body["message"]
    status, body = await api(
        "POST", "deployments", body={**base, "flow_id": str(uuid4()), "notebook": make_notebook()}
    )
    assert status == 404


@pytest.mark.parametrize(
    ("path", "status", "problem"),
    [
        ("../outside.ipynb", 403, "climbs out"),
        ("work/../../outside.ipynb", 403, "climbs out"),
        ("/etc/passwd", 403, "absolute"),
        ("C:\\Windows\\x.ipynb", 403, "absolute"),
        ("link/outside.ipynb", 403, "symlink"),
        ("", 400, "empty"),
    ],
)
async def test_notebook_paths_are_confined_to_the_root(
    api: Api, jp_root_dir: Path, tmp_path: Path, path: str, status: int, problem: str
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "outside.ipynb").write_text(json.dumps(make_notebook()))
    os.symlink(outside, jp_root_dir / "link")
    _, flow = await api("POST", "flows", body={"name": "conf"})
    got, body = await api(
        "POST", "deployments", body={"flow_id": flow["id"], "name": "d", "notebook_path": path}
    )
    assert got == status, body
    assert problem in body["message"]
    assert body["errors"][0]["field"] == "body.notebook_path"
    got, body = await api("POST", "flow_runs", body={"flow_id": flow["id"], "notebook_path": path})
    assert got == status
