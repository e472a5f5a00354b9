"""A runner's process reports through the API with its run token only (`nbflow execute`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nbflow_server import NbflowApp
from tests.server.helpers import Api, make_notebook


@pytest.mark.slow
async def test_nbflow_execute_reports_with_a_run_token(
    api: Api,
    nbflow_app: NbflowApp,
    jp_serverapp: Any,
    http_server_client: Any,
    jp_http_port: int,
    tmp_path: Path,
) -> None:
    _, flow = await api("POST", "flows", body={"name": "via-server"})
    _, dep = await api(
        "POST",
        "deployments",
        body={
            "flow_id": flow["id"],
            "name": "d",
            "notebook": make_notebook(["x = 6 * 7", "print(x)"]),
        },
    )
    _, run = await api("POST", "deployments", dep["id"], "runs", body={})
    # Claimed (as a dispatcher does): the policy lets only a claimed run enter Running.
    pending = {"type": "PENDING", "name": "Pending"}
    status, claimed = await api(
        "POST", "flow_runs", run["id"], "set_state", body={"state": pending}
    )
    assert status == 200 and claimed["status"] == "ACCEPT", claimed
    env = {
        **os.environ,
        "NBFLOW_API_URL": f"http://127.0.0.1:{jp_http_port}{jp_serverapp.base_url}nbflow/api/v1",
        "NBFLOW_API_TOKEN": nbflow_app.mint_run_token(run["id"]),
        "NBFLOW_HOME": str(tmp_path / "runner-home"),
    }
    command = [sys.executable, "-m", "nbflow", "execute", run["id"]]
    loop = asyncio.get_running_loop()
    done = await loop.run_in_executor(
        None,
        lambda: subprocess.run(command, env=env, capture_output=True, text=True, timeout=240),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _, final = await api("GET", "flow_runs", run["id"])
    assert final["state"]["type"] == "COMPLETED", final["state"]
    _, states = await api("GET", "flow_runs", run["id"], "states")
    assert [s["type"] for s in states["items"]][-2:] == ["RUNNING", "COMPLETED"]
    _, arts = await api("GET", "artifacts", params={"flow_run_id": run["id"]})
    assert any(a["kind"] == "notebook" for a in arts["items"])
