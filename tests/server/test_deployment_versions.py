"""Editing a deployment through the REST API: versions with their author, no silent
overwrite (409), a dry run listing the changes, code-cell diffs, kernel and run mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.auth.identity import User

from nbflow.schemas import FlowRunCreate
from nbflow.states import Scheduled
from nbflow_server import NbflowApp
from tests.server.helpers import Api, make_notebook


async def _deploy(api: Api, jp_root_dir: Path) -> dict[str, Any]:
    (jp_root_dir / "report.ipynb").write_text(json.dumps(make_notebook(["x = 1", "print(x)"])))
    schema = {"properties": {"region": {"type": "string"}}}
    _, flow = await api("POST", "flows", body={"name": "report", "parameters_schema": schema})
    status, dep = await api(
        "POST",
        "deployments",
        body={
            "flow_id": flow["id"],
            "name": "daily",
            "notebook_path": "report.ipynb",
            "schedules": [{"cron": "*/30 * * * *"}],
            "parameters": {"region": "US"},
        },
    )
    assert status == 201, dep
    return dep  # type: ignore[no-any-return]


async def test_a_stale_edit_is_refused_with_409_and_changes_nothing(
    api: Api, jp_root_dir: Path
) -> None:
    dep = await _deploy(api, jp_root_dir)
    assert dep["version"] == 1
    # Two people opened version 1; the first saves a new schedule.
    status, first = await api(
        "PATCH",
        "deployments",
        dep["id"],
        body={"schedules": [{"cron": "0 6 * * *"}], "expected_version": 1},
    )
    assert status == 200 and first["version"] == 2, first
    # The second saves region EU from version 1: refused, naming version 2 and schedules.
    status, body = await api(
        "PATCH",
        "deployments",
        dep["id"],
        body={"parameters": {"region": "EU"}, "expected_version": 1},
    )
    assert status == 409, body
    assert "version 2" in body["message"] and "schedules" in body["message"]
    error = body["errors"][0]
    assert error["field"] == "body.expected_version"
    assert (error["current_version"], error["changed"]) == ("2", "schedules")
    _, now = await api("GET", "deployments", dep["id"])
    assert now["version"] == 2 and now["parameters"] == {"region": "US"}
    assert now["schedules"][0]["cron"] == "0 6 * * *"
    # The same through If-Match (the ETag of a read is the version).
    status, _ = await api(
        "PATCH",
        "deployments",
        dep["id"],
        body={"description": "x"},
        headers={"If-Match": '"1"'},
    )
    assert status == 409
    status, ok = await api(
        "PATCH", "deployments", dep["id"], body={"description": "x"}, headers={"If-Match": '"2"'}
    )
    assert status == 200 and ok["version"] == 3 and ok["description"] == "x"


async def test_a_dry_run_lists_the_changes_without_saving(api: Api, jp_root_dir: Path) -> None:
    dep = await _deploy(api, jp_root_dir)
    edit = {
        "parameters": {"region": "EU"},
        "schedules": [{"cron": "*/30 * * * *"}],  # unchanged: not listed
        "run_mode": "file",
        "expected_version": 1,
    }
    status, preview = await api("POST", "deployments", dep["id"], "changes", body=edit)
    assert status == 200, preview
    assert preview["version"] == 1
    assert preview["changes"] == [
        {"field": "parameters", "old": {"region": "US"}, "new": {"region": "EU"}},
        {"field": "run_mode", "old": "snapshot", "new": "file"},
    ]
    _, now = await api("GET", "deployments", dep["id"])
    assert now["version"] == 1 and now["run_mode"] == "snapshot"
    status, body = await api(
        "POST", "deployments", dep["id"], "changes", body={**edit, "expected_version": 0}
    )
    assert status == 409 and body["errors"][0]["current_version"] == "1"


async def test_every_update_is_a_version_with_its_author_and_a_code_diff(
    api: Api, jp_root_dir: Path, jp_serverapp: Any
) -> None:
    dep = await _deploy(api, jp_root_dir)
    await api("PATCH", "deployments", dep["id"], body={"paused": True})
    # The file changed; a new snapshot of it is a version with a code diff.
    (jp_root_dir / "report.ipynb").write_text(
        json.dumps(make_notebook(["x = 2", "print(x)", "print('done')"]))
    )
    status, snap = await api("PATCH", "deployments", dep["id"], body={"resnapshot": True})
    assert status == 200 and snap["version"] == 3, snap
    status, listed = await api("GET", "deployments", dep["id"], "versions")
    assert status == 200
    items = listed["items"]
    assert [(v["version"], v["summary"]) for v in items] == [
        (3, "changed notebook snapshot"),
        (2, "paused"),
        (1, "created"),
    ]
    # A bare-token request has no named Jupyter user: the REST API made these versions.
    assert {v["author"] for v in items} == {"api"}
    status, two = await api("GET", "deployments", dep["id"], "versions", "2")
    assert status == 200 and two["definition"]["paused"] is True
    assert two["changes"] == [{"field": "paused", "old": False, "new": True}]
    assert two["notebook"]["cells"][0]["source"] == "x = 1"
    status, diff = await api("GET", "deployments", dep["id"], "versions", "3", "diff")
    assert status == 200 and diff["against"] == 2
    assert [c["field"] for c in diff["changes"]] == ["notebook"]
    assert [(c["status"], c["old_index"], c["new_index"]) for c in diff["cells"]] == [
        ("changed", 0, 0),
        ("added", None, 2),
    ]
    assert "-x = 1\n+x = 2\n" in diff["cells"][0]["diff"]
    status, same = await api(
        "GET", "deployments", dep["id"], "versions", "3", "diff", params={"against": "3"}
    )
    assert status == 200 and same["cells"] == [] and same["changes"] == []
    status, body = await api("GET", "deployments", dep["id"], "versions", "9")
    assert status == 404
    status, body = await api("GET", "deployments", dep["id"], "versions", "zero")
    assert status == 400 and body["errors"][0]["field"] == "version"


async def test_kernel_name_is_checked_against_the_servers_kernelspecs(
    api: Api, jp_root_dir: Path
) -> None:
    dep = await _deploy(api, jp_root_dir)
    status, body = await api("PATCH", "deployments", dep["id"], body={"kernel_name": "nope-9"})
    assert status == 400, body
    assert body["errors"][0]["field"] == "body.kernel_name"
    assert "python3" in body["message"]  # the available ones are listed
    status, ok = await api("PATCH", "deployments", dep["id"], body={"kernel_name": "python3"})
    assert status == 200 and ok["kernel_name"] == "python3" and ok["version"] == 2
    status, reset = await api("PATCH", "deployments", dep["id"], body={"kernel_name": None})
    assert status == 200 and reset["kernel_name"] is None
    status, envs = await api("GET", "run_environments")
    assert status == 200
    assert "python3" in [k["name"] for k in envs["kernelspecs"]]
    assert "subprocess" in envs["runners"] and envs["default_runner"]


async def test_file_mode_of_an_uploaded_notebook_is_refused(api: Api, jp_root_dir: Path) -> None:
    _, flow = await api("POST", "flows", body={"name": "uploaded"})
    _, dep = await api(
        "POST",
        "deployments",
        body={"flow_id": flow["id"], "name": "u", "notebook": make_notebook()},
    )
    status, body = await api("PATCH", "deployments", dep["id"], body={"run_mode": "file"})
    assert status == 400 and body["errors"][0]["field"] == "run_mode", body


async def test_an_edited_schedule_replaces_the_future_scheduled_runs(
    api: Api, jp_root_dir: Path, nbflow_app: NbflowApp
) -> None:
    dep = await _deploy(api, jp_root_dir)
    store = nbflow_app.lifecycle.store
    old = store.create_flow_run(
        FlowRunCreate(
            flow_id=dep["flow_id"],
            deployment_id=dep["id"],
            state=Scheduled(),
            idempotency_key="scheduled:2099-01-01T00:30:00+00:00",
        )
    )
    status, _ = await api("PATCH", "deployments", dep["id"], body={"description": "only text"})
    assert status == 200
    assert store.read_flow_run(old.id).id == old.id  # not a schedule change: kept
    status, _ = await api(
        "PATCH", "deployments", dep["id"], body={"schedules": [{"cron": "0 6 * * *"}]}
    )
    assert status == 200
    _, runs = await api("GET", "flow_runs", params={"deployment_ids": dep["id"]})
    assert old.id not in [r["id"] for r in runs["items"]]


async def test_redeploying_updates_the_deployment_as_a_new_version(
    api: Api, jp_root_dir: Path
) -> None:
    dep = await _deploy(api, jp_root_dir)
    status, _ = await api("PATCH", "deployments", dep["id"], body={"run_mode": "file"})
    assert status == 200
    status, again = await api(
        "POST",
        "deployments",
        body={
            "flow_id": dep["flow_id"],
            "name": "daily",
            "notebook_path": "report.ipynb",
            "schedules": [{"cron": "*/30 * * * *"}],
            "parameters": {"region": "EU"},
        },
    )
    assert status == 201 and again["id"] == dep["id"] and again["version"] == 3
    assert again["run_mode"] == "file"  # not given by the redeploy: kept
    _, three = await api("GET", "deployments", dep["id"], "versions", "3")
    assert [c["field"] for c in three["changes"]] == ["parameters"]


async def test_a_named_jupyter_user_is_the_author(
    api: Api, jp_root_dir: Path, jp_serverapp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As behind JupyterHub: the identity provider names the user of each request.
    monkeypatch.setattr(
        jp_serverapp.identity_provider,
        "generate_anonymous_user",
        lambda handler: User(username="alice", name="Alice"),
    )
    dep = await _deploy(api, jp_root_dir)
    await api("PATCH", "deployments", dep["id"], body={"tags": ["sales"]})
    _, listed = await api("GET", "deployments", dep["id"], "versions")
    assert [(v["version"], v["author"]) for v in listed["items"]] == [(2, "alice"), (1, "alice")]
