"""End to end: the server's scheduler, dispatcher and monitors with real `nbflow execute` runs.

The subprocess runner starts each run as its own process group; the run reports to the
server over HTTP with its run token.  Every test runs on SQLite and on PostgreSQL.  Waits
poll with generous deadlines; nothing asserts on durations.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbflow.client.embedded import EmbeddedClient
from nbflow.settings import reload_settings
from nbflow.states import now
from nbflow_server import NbflowApp
from nbflow_server.services.monitors import probe_subprocess
from tests.live_server import LiveServer
from tests.server.helpers import Api, make_notebook
from tests.server.live_services import (
    BACKENDS,
    database_url,
    eventually,
    kernel_settled,
    services_config,
)

pytestmark = pytest.mark.slow

TASK_NOTEBOOK = ["%load_ext nbflow", "%%task compute\nx = 6 * 7", "%%task show\nprint(x)"]
SLEEP_NOTEBOOK = ["import time", "time.sleep(600)"]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """One NBFLOW_HOME for the server and the runs it starts (they inherit it)."""
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / "home"))
    for name in ("NBFLOW_API_URL", "NBFLOW_API_TOKEN", "NBFLOW_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    reload_settings()
    yield tmp_path / "home"
    monkeypatch.undo()
    reload_settings()


@pytest.fixture
def limits() -> dict[str, Any]:
    return {}


@pytest.fixture
def jp_server_config(
    db_url: str, tmp_path: Path, home: Path, limits: dict[str, Any]
) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "heartbeat_timeout": 300.0,
        "cancel_timeout": 60.0,
        "runner_defaults": {"subprocess": {"stream_output": False}},
    }
    return services_config(db_url, tmp_path, **{**settings, **limits})


async def start(jp_serverapp: Any, nbflow_app: NbflowApp) -> NbflowApp:
    """Start the services (ServerApp.start() does this; pytest-jupyter does not)."""
    await jp_serverapp.extension_manager.start_all_extensions()
    return nbflow_app


async def _deploy(api: Api, cells: list[str], name: str = "e2e", **fields: Any) -> dict[str, Any]:
    _, flow = await api("POST", "flows", body={"name": f"flow-{name}"})
    status, dep = await api(
        "POST",
        "deployments",
        body={"flow_id": flow["id"], "name": name, "notebook": make_notebook(cells), **fields},
    )
    assert status == 201, dep
    return dep  # type: ignore[no-any-return]


async def _wait_state(api: Api, run_id: str, *types: str, deadline: float = 240.0) -> Any:
    async def check() -> Any:
        _, run = await api("GET", "flow_runs", run_id)
        return run if run["state"]["type"] in types else None

    return await eventually(check, what=f"run {run_id} to be {'/'.join(types)}", deadline=deadline)


def _pid(run: dict[str, Any]) -> int:
    host, _, pid = run["infrastructure_id"].rpartition(":")
    assert host == socket.gethostname()
    return int(pid)


async def test_scheduled_deployment_runs_for_real_and_reports_back(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    await start(jp_serverapp, nbflow_app)
    anchor = (now() + timedelta(seconds=1)).isoformat()
    dep = await _deploy(
        api, TASK_NOTEBOOK, schedules=[{"interval_seconds": 3600, "anchor_date": anchor}]
    )

    async def scheduled() -> Any:
        _, page = await api("GET", "flow_runs", params={"deployment_ids": dep["id"]})
        return page["items"][0] if page["items"] else None

    run = await eventually(scheduled, what="the scheduler to create the run")
    final = await _wait_state(api, run["id"], "COMPLETED", "FAILED", "CRASHED")
    assert final["state"]["type"] == "COMPLETED", final["state"]
    _, states = await api("GET", "flow_runs", run["id"], "states")
    assert [(s["type"], s["name"]) for s in states["items"]] == [
        ("SCHEDULED", "Scheduled"),
        ("PENDING", "Pending"),
        ("PENDING", "Submitting"),
        ("RUNNING", "Running"),
        ("COMPLETED", "Completed"),
    ]
    _, task_runs = await api("GET", "task_runs", params={"flow_run_ids": run["id"]})
    assert sorted(t["name"] for t in task_runs["items"]) == ["compute", "show"]
    assert all(t["state"]["type"] == "COMPLETED" for t in task_runs["items"])
    _, logs = await api("GET", "logs", params={"flow_run_id": run["id"]})
    assert any("42" in entry["message"] for entry in logs["logs"])
    # The output notebook travelled as the artifact's data: the server needs no shared disk.
    _, artifacts = await api("GET", "artifacts", params={"flow_run_id": run["id"]})
    (notebook_artifact,) = [a for a in artifacts["items"] if a["kind"] == "notebook"]
    assert notebook_artifact["data"]["cells"]
    Path(final["output_path"]).unlink()
    status, output = await api("GET", "flow_runs", run["id"], "output")
    assert status == 200
    printed = [
        "".join(o.get("text", ""))
        for cell in output["cells"]
        for o in cell.get("outputs", [])
        if o.get("output_type") == "stream"
    ]
    assert "42\n" in printed


async def test_cancelling_a_running_run_stops_its_process(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    await start(jp_serverapp, nbflow_app)
    dep = await _deploy(api, SLEEP_NOTEBOOK)
    _, run = await api("POST", "deployments", dep["id"], "runs", body={})
    running = await _wait_state(api, run["id"], "RUNNING")
    infrastructure_id = running["infrastructure_id"]
    status, _ = await api("POST", "flow_runs", run["id"], "cancel")
    assert status == 200
    final = await _wait_state(api, run["id"], "CANCELLED", "CRASHED")
    assert final["state"]["type"] == "CANCELLED", final["state"]
    await eventually(
        lambda: asyncio.sleep(0, probe_subprocess(infrastructure_id) is False),
        what="the run's process group to be gone",
    )


async def test_killed_process_is_crashed(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    await start(jp_serverapp, nbflow_app)
    dep = await _deploy(api, SLEEP_NOTEBOOK)
    _, run = await api("POST", "deployments", dep["id"], "runs", body={})
    running = await _wait_state(api, run["id"], "RUNNING")
    os.killpg(_pid(running), signal.SIGKILL)
    final = await _wait_state(api, run["id"], "CRASHED", "COMPLETED", "FAILED", "CANCELLED")
    assert final["state"]["type"] == "CRASHED"
    assert "killed by signal 9" in final["state"]["message"]


@pytest.mark.parametrize("limits", [{"global_concurrency_limit": 2}])
async def test_concurrency_limits_with_real_runs(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    await start(jp_serverapp, nbflow_app)
    short = ["import time", "time.sleep(1)"]
    one = await _deploy(api, short, "one", concurrency_limit=1)
    two = await _deploy(api, short, "two")
    runs = [
        (await api("POST", "deployments", dep["id"], "runs", body={}))[1]
        for dep in (one, one, two, two)
    ]
    finals = [await _wait_state(api, r["id"], "COMPLETED", "FAILED", "CRASHED") for r in runs]
    assert [f["state"]["type"] for f in finals] == ["COMPLETED"] * 4
    # Deployment one ran its runs one after the other.
    first, second = sorted(finals[:2], key=lambda f: f["start_time"])
    assert second["start_time"] >= first["end_time"]
    # At no moment did more than two runs hold a slot: each run's claim happened while
    # fewer than two other runs were between their claim and their end.
    spans = []
    for f in finals:
        _, states = await api("GET", "flow_runs", f["id"], "states")
        claimed = next(s["timestamp"] for s in states["items"] if s["name"] == "Pending")
        spans.append((claimed, f["end_time"]))
    for claimed, _ in spans:
        holding = [s for s in spans if s[0] <= claimed < s[1]]
        assert len(holding) <= 2
    # The waiting was visible in the logs of some run.
    messages = []
    for r in runs:
        _, logs = await api("GET", "logs", params={"flow_run_id": r["id"]})
        messages += [e["message"] for e in logs["logs"] if e["logger"] == "nbflow.dispatcher"]
    assert any(m.startswith("waiting for a concurrency slot") for m in messages)


@pytest.mark.parametrize("backend", BACKENDS)
def test_restart_reconciles_and_never_duplicates(backend: str, tmp_path: Path, home: Path) -> None:
    """Stop a server with runs in progress, kill one run, start a new server on the database."""
    with database_url(backend, tmp_path) as db:
        server = LiveServer(
            tmp_path / "live",
            services=True,
            db_url=db,
            extra_args=[
                "--set", "NbflowApp.dispatch_interval=0.2",
                "--set", "NbflowApp.monitor_interval=0.2",
                "--set", "NbflowApp.scheduler_interval=0.5",
                "--set", "NbflowApp.heartbeat_timeout=300",
            ],
        )  # fmt: skip
        headers = {"Authorization": f"token {server.token}"}
        api = httpx.Client(base_url=server.api_url + "/", headers=headers, timeout=60)

        def wait_for(what: str, check: Any, deadline: float = 240.0) -> Any:
            stop = time.monotonic() + deadline
            while time.monotonic() < stop:
                value = check()
                if value:
                    return value
                time.sleep(0.2)
            pytest.fail(f"gave up waiting for {what}")

        def run_state(run_id: str) -> dict[str, Any]:
            return api.get(f"flow_runs/{run_id}").json()  # type: ignore[no-any-return]

        try:
            server.start()
            flow = api.post("flows", json={"name": "restart"}).json()
            anchor = (now() + timedelta(seconds=1)).isoformat()
            dep = api.post(
                "deployments",
                json={
                    "flow_id": flow["id"],
                    "name": "d",
                    "notebook": make_notebook(SLEEP_NOTEBOOK),
                    "schedules": [{"interval_seconds": 3600, "anchor_date": anchor}],
                },
            ).json()
            extra = api.post(f"deployments/{dep['id']}/runs", json={}).json()

            def all_running() -> list[dict[str, Any]] | None:
                page = api.get("flow_runs", params={"deployment_ids": dep["id"]}).json()
                # The next auto-scheduled run (an hour later) waits: leave it out.
                runs = [r for r in page["items"] if r["state"]["type"] != "SCHEDULED"]
                if len(runs) == 2 and all(r["state"]["type"] == "RUNNING" for r in runs):
                    return runs
                return None

            runs = wait_for("both runs to be Running", all_running)
            assert len(runs) == 2
            doomed, survivor = runs
            before = api.get("flow_runs", params={"deployment_ids": dep["id"]}).json()
            server.stop()
            os.killpg(_pid(doomed), signal.SIGKILL)
            server.start()
            crashed = wait_for(
                "the dead run to be Crashed",
                lambda: (r := run_state(doomed["id"]))["state"]["type"] == "CRASHED" and r,
            )
            assert "found at server start-up" in crashed["state"]["message"]
            assert run_state(survivor["id"])["state"]["type"] == "RUNNING"
            # The new server's scheduler and dispatcher added nothing: no duplicate run,
            # and no run claimed twice.
            page = api.get("flow_runs", params={"deployment_ids": dep["id"]}).json()
            ids = sorted(r["id"] for r in page["items"])
            assert ids == sorted(r["id"] for r in before["items"])
            assert extra["id"] in ids
            for run_id in (doomed["id"], survivor["id"]):
                states = api.get(f"flow_runs/{run_id}/states").json()["items"]
                assert [s["name"] for s in states].count("Pending") == 1
            # The survivor still belongs to someone: cancel it through the new server.
            assert api.post(f"flow_runs/{survivor['id']}/cancel").status_code == 200
            wait_for(
                "the survivor to be Cancelled",
                lambda: run_state(survivor["id"])["state"]["type"] == "CANCELLED",
            )
            wait_for(
                "the survivor's process to be gone",
                lambda: probe_subprocess(survivor["infrastructure_id"]) is False,
            )
            # Nothing is left in progress.
            busy = api.get(
                "flow_runs",
                params=[("state_types", t) for t in ("PENDING", "RUNNING", "CANCELLING")],
            ).json()
            assert busy["total"] == 0
        finally:
            server.stop()
            api.close()
            for run in _runs_left(db):
                if run.infrastructure_id and probe_subprocess(run.infrastructure_id):
                    os.killpg(int(run.infrastructure_id.rpartition(":")[2]), signal.SIGKILL)


def _runs_left(db: str) -> list[Any]:
    """The runs in the database (for cleaning up processes a failed test left behind)."""
    try:
        client = EmbeddedClient.from_url(db)
    except Exception:
        return []
    try:
        return client.read_flow_runs()
    finally:
        client.close()


@pytest.mark.parametrize("limits", [{"heartbeat_timeout": 25.0}])
async def test_interactive_run_of_a_dead_kernel_is_crashed(
    api: Api, jp_fetch: Any, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    """A kernel started by the server runs %%flow against it; SIGKILL it: the run is Crashed."""
    await start(jp_serverapp, nbflow_app)
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id = json.loads(response.body)["id"]
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    km.autorestart = False
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        for code in ("%load_ext nbflow", "%%flow kernel_flow\nx = 1"):
            reply = await kc.execute_interactive(code, timeout=120)
            assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        kc.stop_channels()

    async def running() -> Any:
        _, page = await api("GET", "flow_runs", params={"flow_names": "kernel_flow"})
        items = [r for r in page["items"] if r["state"]["type"] == "RUNNING"]
        return items[0] if items else None

    run = await eventually(running, what="the kernel's interactive run")
    assert run["mode"] == "interactive"
    os.kill(km.provisioner.process.pid, signal.SIGKILL)
    final = await _wait_state(api, run["id"], "CRASHED", "COMPLETED", "FAILED", "CANCELLED")
    assert final["state"]["type"] == "CRASHED"
    # Its server notices the death (services/kernels.py), not the heartbeat timeout.
    assert "the kernel running this interactive run died" in final["state"]["message"]
    # Its restarter brings the kernel back: let that finish before the server shuts down.
    await kernel_settled(jp_serverapp, kernel_id)


async def test_ad_hoc_notebook_path_runs_from_the_server_root(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp, jp_root_dir: Path
) -> None:
    await start(jp_serverapp, nbflow_app)
    sub = jp_root_dir / "reports"
    sub.mkdir()
    (sub / "adhoc.ipynb").write_text(json.dumps(make_notebook(["print('from the root')"])))
    _, flow = await api("POST", "flows", body={"name": "adhoc"})
    status, run = await api(
        "POST",
        "flow_runs",
        body={
            "flow_id": flow["id"],
            "mode": "batch",
            "notebook_path": "reports/adhoc.ipynb",
            "state": {"type": "SCHEDULED"},
        },
    )
    assert status == 201, run
    assert run["runner"] == "subprocess"
    final = await _wait_state(api, run["id"], "COMPLETED", "FAILED", "CRASHED")
    assert final["state"]["type"] == "COMPLETED", final["state"]
    _, logs = await api("GET", "logs", params={"flow_run_id": run["id"]})
    assert any("from the root" in entry["message"] for entry in logs["logs"])
