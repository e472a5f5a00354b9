"""Retention through the server: ``POST /flow_runs/prune`` and the retention service."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from traitlets import TraitError

from nbflow.orchestration.store import Store
from nbflow.states import Completed
from nbflow_server import NbflowApp
from tests.live_server import LiveServer
from tests.retention_world import MONTH, OLD, World
from tests.server.helpers import Api


async def test_prune_route_deletes_one_batch_per_request(
    api: Api, nbflow_app: NbflowApp, tmp_path: Path
) -> None:
    world = World(nbflow_app.lifecycle.store, tmp_path)
    old = [world.run(end=Completed(), age=OLD, tasks=1) for _ in range(3)]
    recent = world.run(end=Completed(), tasks=1)
    body = {"older_than_seconds": MONTH.total_seconds(), "batch_size": 2}

    status, counted = await api("POST", "flow_runs", "prune", body={**body, "dry_run": True})
    assert status == 200
    assert (counted["runs"], counted["task_runs"], counted["dry_run"]) == (3, 3, True)
    assert all(world.rows(r.id)["flow_runs"] == 1 for r in old)

    status, first = await api("POST", "flow_runs", "prune", body=body)
    assert status == 200 and first["runs"] == 2 and first["more"] is True
    status, second = await api("POST", "flow_runs", "prune", body=body)
    assert second["runs"] == 1 and second["more"] is False
    assert all(world.rows(r.id)["flow_runs"] == 0 for r in old)
    assert world.rows(recent.id)["flow_runs"] == 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({"older_than_seconds": 0}, "older_than_seconds"),
        ({"older_than_seconds": 5e-324}, "older_than_seconds"),  # found by the fuzzer: a 500
        ({"older_than_seconds": 60, "batch_size": 0}, "batch_size"),
        ({"older_than_seconds": 60, "everything": True}, "everything"),
        ({}, "older_than_seconds"),
    ],
)
async def test_prune_route_refuses_bad_bodies(api: Api, body: dict, field: str) -> None:
    status, error = await api("POST", "flow_runs", "prune", body=body)
    assert status == 400
    assert field in str(error)


def test_bad_retention_settings_are_refused() -> None:
    app = NbflowApp()
    with pytest.raises(TraitError, match="retention_days"):
        app.retention_days = -1
    with pytest.raises(TraitError, match="retention_batch_size"):
        app.retention_batch_size = 0


def test_the_retention_service_prunes_on_a_real_server(tmp_path: Path) -> None:
    server = LiveServer(
        tmp_path,
        services=True,
        db_url=f"sqlite:///{tmp_path / 'nbflow.db'}",
        extra_args=[
            "--set",
            "NbflowApp.retention_days=30",
            "--set",
            "NbflowApp.retention_interval=0.5",
            "--set",
            "NbflowApp.retention_batch_size=2",
        ],
    )
    store = Store.from_url(server.db_url or "")
    try:
        world = World(store, tmp_path, home=server.home)
        old = [world.run(end=Completed(), age=OLD) for _ in range(5)]
        kept = world.run(end=Completed(), age=timedelta(days=29))
        assert all(len(world.files(r)) == 3 for r in old)
        with server:
            deadline = time.monotonic() + 60
            while any(world.rows(r.id)["flow_runs"] for r in old):
                assert time.monotonic() < deadline, server.log.read_text()[-3000:]
                time.sleep(0.2)
        assert all(set(world.rows(r.id).values()) == {0} for r in old)
        assert all(world.files(r) == [] for r in old)
        assert world.rows(kept.id)["flow_runs"] == 1 and len(world.files(kept)) == 3
        assert "nbflow retention: deleted" in server.log.read_text()
    finally:
        store.close()
