"""With services enabled, the server's scheduler creates the runs of a new deployment."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from nbflow_server import NbflowApp
from tests.server.helpers import Api, make_notebook


@pytest.fixture
def jp_server_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"nbflow_server": True}},
        "NbflowApp": {
            "db_url": f"sqlite:///{tmp_path / 'nbflow.db'}",
            "secret_file": str(tmp_path / "secret"),
            "services_enabled": True,
            "scheduler_interval": 3600,
            "scheduled_runs_ahead": 3,
        },
    }


async def test_scheduler_service_creates_runs_of_new_deployments(
    api: Api, nbflow_app: NbflowApp, jp_serverapp: Any
) -> None:
    # What ServerApp.start() does once its event loop runs (pytest-jupyter does not).
    await jp_serverapp.extension_manager.start_all_extensions()
    assert "scheduler" in nbflow_app.services.running
    _, flow = await api("POST", "flows", body={"name": "hourly"})
    status, dep = await api(
        "POST",
        "deployments",
        body={
            "flow_id": flow["id"],
            "name": "d",
            "notebook": make_notebook(),
            "schedules": [{"cron": "0 * * * *"}],
        },
    )
    assert status == 201
    # Creating the deployment woke the scheduler: wait for its pass (bounded, not timed).
    page: dict[str, Any] = {}
    for _ in range(600):
        _, page = await api("GET", "flow_runs", params={"deployment_ids": dep["id"]})
        if page["total"] >= 3:
            break
        await asyncio.sleep(0.05)
    assert page["total"] == 3
    keys = sorted(r["idempotency_key"] for r in page["items"])
    assert all(k.startswith("scheduled:") for k in keys)
    # Another pass creates nothing new.
    assert nbflow_app.scheduler is not None
    await nbflow_app.scheduler.tick()
    _, again = await api("GET", "flow_runs", params={"deployment_ids": dep["id"]})
    assert again["total"] == 3
