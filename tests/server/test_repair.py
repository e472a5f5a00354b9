"""``POST /flow_runs/{id}/retry`` with ``from_failed``: a repair through the server.

The route (bad input 400 naming the field, a run token 403, the plan in the new run's
first state) against pytest-jupyter's server, and a whole repair of a deployed notebook
dispatched by a live ``nbflow server`` and followed by ``nbflow runs retry``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from nbflow.client.http import HTTPClient
from nbflow.orchestration.repair import RepairPlan
from nbflow.schemas import Flow, FlowRun, FlowRunCreate, TaskRun, TaskRunFilter
from nbflow.states import Completed, Failed, Pending, Running, Scheduled, State
from nbflow_server import NbflowApp
from tests.cli.test_deploy import run_cli, write_notebook
from tests.cli.test_runs_retry import REPAIRABLE, cell_text, run_id_of
from tests.live_server import LiveServer
from tests.server.helpers import Api


def _batch_run(app: NbflowApp, *states: State) -> FlowRun:
    flow = app.client.create_flow(Flow(name=f"repair-{uuid4().hex[:8]}"))
    run = app.client.create_flow_run(
        FlowRunCreate(flow_id=flow.id, mode="batch", runner="subprocess", state=Scheduled())
    )
    for state in states:
        app.client.set_flow_run_state(run.id, state, force=True)
    return app.client.read_flow_run(run.id)


def _task_run(app: NbflowApp, run: FlowRun, name: str, state: State) -> TaskRun:
    task_run = TaskRun(flow_run_id=run.id, name=name, task_key=name, state=state, run_count=1)
    app.client.write_task_runs([task_run], [(task_run.id, state)])
    return task_run


async def test_retry_from_failed_carries_the_plan_and_refuses_bad_input(
    api: Api, nbflow_app: NbflowApp
) -> None:
    old = _batch_run(nbflow_app, Pending(), Running(), Failed(message="cell 3 raised"))
    done = _task_run(nbflow_app, old, "extract", Completed(data={"result_key": "k-extract"}))
    _task_run(nbflow_app, old, "report", Failed(message="boom"))
    _task_run(nbflow_app, old, "unpersisted", Completed())

    for body, field in (
        ({"from_failed": "yes"}, "body.from_failed"),
        ({"from_failed": 1}, "body.from_failed"),
        ({"from_failed": True, "form_failed": True}, "body.form_failed"),
    ):
        status, answer = await api("POST", "flow_runs", str(old.id), "retry", body=body)
        assert status == 400, answer
        assert answer["errors"][0]["field"] == field, answer

    status, new = await api("POST", "flow_runs", str(old.id), "retry", body={"from_failed": True})
    assert status == 201, new
    assert new["retry_of"] == str(old.id) and new["state"]["type"] == "SCHEDULED"
    plan = RepairPlan.from_states(nbflow_app.client.read_flow_run_states(UUID(new["id"])))
    assert plan is not None and plan.from_flow_run_id == old.id
    assert set(plan.tasks) == {"extract"}
    assert plan.tasks["extract"].task_run_id == done.id
    assert plan.tasks["extract"].result_key == "k-extract"

    status, plain = await api("POST", "flow_runs", str(old.id), "retry", body={})
    assert status == 201
    states = nbflow_app.client.read_flow_run_states(UUID(plain["id"]))
    assert RepairPlan.from_states(states) is None

    completed = _batch_run(nbflow_app, Pending(), Running(), Completed())
    status, answer = await api(
        "POST", "flow_runs", str(completed.id), "retry", body={"from_failed": True}
    )
    assert status == 400, answer
    assert answer["errors"][0]["field"] == "body.from_failed"
    assert "Completed" in answer["message"]


async def test_a_run_token_cannot_repair_or_retry(api: Api, nbflow_app: NbflowApp) -> None:
    failed = _batch_run(nbflow_app, Pending(), Running(), Failed())
    live = _batch_run(nbflow_app, Pending(), Running())
    before = len(nbflow_app.client.read_flow_runs())
    for holder in (live, failed):
        auth = {"Authorization": f"token {nbflow_app.mint_run_token(holder.id)}"}
        for body in ({"from_failed": True}, {}):
            status, answer = await api(
                "POST", "flow_runs", str(failed.id), "retry", body=body, headers=auth
            )
            assert status == 403, answer
    assert len(nbflow_app.client.read_flow_runs()) == before


# -- a whole repair through a live server ----------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that dispatches runs itself (subprocess runner)."""
    interval = [
        "--set",
        "NbflowApp.dispatch_interval=0.2",
        "--set",
        "NbflowApp.monitor_interval=0.2",
    ]
    with LiveServer(
        tmp_path_factory.mktemp("repair-server"), services=True, extra_args=interval
    ) as live:
        yield live


def _wait_terminal(client: HTTPClient, run_id: str, timeout: float = 240) -> FlowRun:
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(UUID(run_id))
        if run.state is not None and run.state.is_terminal:
            return run
        assert time.monotonic() < deadline, f"run stayed {run.state}"
        time.sleep(0.3)


def test_repair_through_the_server(server: LiveServer, tmp_path: Path) -> None:
    counters = tmp_path / "counters"
    counters.mkdir()
    # Absolute counter paths: a dispatched run's kernel runs in the deployment's directory.
    cells = [c.replace("pathlib.Path('", f"pathlib.Path('{counters}/") for c in REPAIRABLE]
    write_notebook(tmp_path / "repair.ipynb", cells)
    assert run_cli(server, "deploy", "repair.ipynb", "--name", "rep", cwd=tmp_path).code == 0
    started = run_cli(server, "deployments", "run", "rep", "--json", cwd=tmp_path)
    assert started.code == 0, started.err
    old = started.json()["id"]
    client = HTTPClient(server.api_url, token=server.token)
    try:
        failed = _wait_terminal(client, old)
        assert failed.state is not None and failed.state.name == "Failed", failed.state
        assert (counters / "extract.count").read_text() == "x"

        repaired = run_cli(
            server, "runs", "retry", old[:8], "--from-failed", "-p", "fail=false", cwd=tmp_path
        )
        assert repaired.code == 0, repaired.out + repaired.err
        new = run_id_of(repaired)
        assert "Running" in repaired.out and "Completed" in repaired.out
        assert (counters / "extract.count").read_text() == "x"
        assert (counters / "double.count").read_text() == "x"

        tasks = {t.name: t for t in client.read_task_runs(TaskRunFilter(flow_run_ids=[UUID(new)]))}
        assert tasks["extract"].state is not None and tasks["extract"].state.name == "Cached"
        assert tasks["double"].state is not None and tasks["double"].state.name == "Cached"
        assert tasks["report"].state is not None and tasks["report"].state.name == "Completed"
        notebook: dict[str, Any] = json.loads(
            run_cli(server, "runs", "output", new, "-o", "-", cwd=tmp_path).out
        )
    finally:
        client.close()
    assert "extracted 3 rows" in cell_text(notebook, "%%task extract")
    assert "[2, 4, 6]" in cell_text(notebook, "%%task double")
    assert "total 12" in cell_text(notebook, "%%task report")
