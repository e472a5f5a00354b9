"""Run tokens are capabilities: the reproduced attacks, each refused, and the transition table.

A run token is what a run's own process (``nbflow execute`` and its kernel) holds.  It may
report on its run along the transitions a run process makes and nothing else; it stops
working once its run is terminal.  See docs/security.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import nbformat
import pytest

from nbflow.schemas import Artifact, Flow, FlowRun, FlowRunCreate, TaskRun
from nbflow.states import (
    AwaitingRetry,
    Cancelled,
    Cancelling,
    Completed,
    Crashed,
    Failed,
    Late,
    Pending,
    Running,
    Scheduled,
    State,
    Submitting,
)
from nbflow_server import NbflowApp
from tests.server.helpers import Api, make_notebook


def _state(state: State) -> dict[str, Any]:
    return json.loads(state.model_dump_json())


class Runs:
    """Flow runs of one flow, put straight into a state through the store."""

    def __init__(self, app: NbflowApp) -> None:
        self.app = app
        self.client = app.client
        self.flow = self.client.create_flow(Flow(name=f"tokens-{uuid4().hex[:8]}"))

    def make(self, *states: State, job_variables: dict[str, Any] | None = None) -> FlowRun:
        """Create a run and walk it through ``states`` (forced: fixtures, not the gate)."""
        run = self.client.create_flow_run(
            FlowRunCreate(
                flow_id=self.flow.id,
                state=Scheduled(),
                runner="subprocess",
                job_variables=job_variables or {"env": {"A": "1"}},
            )
        )
        for state in states:
            self.client.set_flow_run_state(run.id, state, force=True)
        return self.client.read_flow_run(run.id)

    def auth(self, run: FlowRun | UUID) -> dict[str, str]:
        rid = run.id if isinstance(run, FlowRun) else run
        return {"Authorization": f"token {self.app.mint_run_token(rid)}"}


@pytest.fixture
def runs(nbflow_app: NbflowApp) -> Runs:
    return Runs(nbflow_app)


# -- reproduction: relaunching a finished run with a program of the token's choice -------


@pytest.mark.parametrize("end", [Completed, Cancelled], ids=["completed", "user-cancelled"])
async def test_token_of_a_finished_run_cannot_relaunch_it_with_its_own_program(
    api: Api, runs: Runs, end: Any
) -> None:
    run = runs.make(Pending(), Running(), end())
    auth = runs.auth(run)

    status, body = await api(
        "PATCH",
        "flow_runs",
        str(run.id),
        body={"job_variables": {"python": "/tmp/any-program"}},
        headers=auth,
    )
    assert status == 403, body
    assert "terminal" in body["message"] or "finished" in body["message"]
    status, body = await api(
        "POST",
        "flow_runs",
        str(run.id),
        "set_state",
        body={"state": _state(AwaitingRetry())},
        headers=auth,
    )
    assert status == 403, body

    after = runs.client.read_flow_run(run.id)
    assert after.job_variables == {"env": {"A": "1"}}
    assert after.state is not None and after.state.type == end().type


async def test_a_live_run_token_never_changes_job_variables_parameters_or_runner(
    api: Api, runs: Runs
) -> None:
    run = runs.make(Pending(), Running())
    auth = runs.auth(run)
    for change in (
        {"job_variables": {"python": "/tmp/any-program"}},
        {"name": "renamed"},
        {"tags": ["x"]},
        {"infrastructure_id": "docker:someone-else"},
        {"parameters": {"x": 1}},
        {"runner": "docker"},
        {"notebook_path": "other.ipynb"},
    ):
        status, body = await api("PATCH", "flow_runs", str(run.id), body=change, headers=auth)
        assert status in (400, 403), (change, status, body)
    after = runs.client.read_flow_run(run.id)
    assert (after.job_variables, after.name, after.runner, after.infrastructure_id) == (
        run.job_variables,
        run.name,
        run.runner,
        run.infrastructure_id,
    )


async def test_a_run_token_never_forces(api: Api, runs: Runs) -> None:
    run = runs.make(Pending(), Running())
    status, body = await api(
        "POST",
        "flow_runs",
        str(run.id),
        "set_state",
        body={"state": _state(Completed()), "force": True},
        headers=runs.auth(run),
    )
    assert status == 403, body
    assert "force" in body["message"]
    assert runs.client.read_flow_run(run.id).state.type == "RUNNING"  # type: ignore[union-attr]


# -- the state transitions a run token may propose --------------------------------------

ALLOW, GATE, REFUSED = "allow", "gate", "refused"

#: (the run's states so far, the proposal, what the token gets) -- docs/security.md's table.
TRANSITIONS: list[tuple[list[State], State, str]] = [
    ([Pending()], Running(), ALLOW),
    ([Submitting()], Running(), ALLOW),
    ([Pending()], Failed(message="not started: bad parameter"), ALLOW),
    ([Pending()], Crashed(), ALLOW),
    ([Pending(), Running()], Completed(), ALLOW),
    ([Pending(), Running()], Failed(), ALLOW),
    ([Pending(), Running()], Crashed(), ALLOW),
    ([Pending(), Running()], Cancelled(), ALLOW),
    ([Pending(), Running()], AwaitingRetry(), ALLOW),
    ([Pending(), Running(), Cancelling()], Cancelled(), ALLOW),
    ([Pending(), Running(), Cancelling()], Crashed(), ALLOW),
    # Lost races: the gate answers (REJECT/ABORT), nothing changes, the process stops cleanly.
    ([Pending(), Running(), Cancelling()], Completed(), GATE),
    ([Pending(), Running(), Cancelling()], Failed(), GATE),
    ([Pending(), Running(), Cancelling()], AwaitingRetry(), GATE),
    ([Pending(), Cancelling()], Running(), GATE),
    ([Pending(), Running()], Running(), GATE),
    ([Pending(), Running(), AwaitingRetry()], Running(), GATE),
    ([], Running(), GATE),  # the run is Scheduled: a stale process of a rescheduled run
    # Never from a run token.
    ([], Completed(), REFUSED),
    ([], AwaitingRetry(), REFUSED),
    ([Pending()], Completed(), REFUSED),
    ([Pending()], Cancelled(), REFUSED),
    ([Pending()], AwaitingRetry(), REFUSED),
    ([Pending(), Running()], Scheduled(), REFUSED),
    ([Pending(), Running()], Late(), REFUSED),
    ([Pending(), Running()], Pending(), REFUSED),
    ([Pending(), Running()], Cancelling(), REFUSED),
    ([Pending(), Running(), Cancelling()], Scheduled(), REFUSED),
    ([Pending(), Running(), AwaitingRetry()], Completed(), REFUSED),
    ([Pending(), Running(), Completed()], AwaitingRetry(), REFUSED),
    ([Pending(), Running(), Completed()], Running(), REFUSED),
    ([Pending(), Running(), Failed()], Completed(), REFUSED),
    ([Pending(), Running(), Crashed()], AwaitingRetry(), REFUSED),
    ([Pending(), Running(), Cancelled()], Scheduled(), REFUSED),
]


async def test_run_token_state_proposals_follow_the_table(api: Api, runs: Runs) -> None:
    for history, proposal, expected in TRANSITIONS:
        run = runs.make(*history)
        before = runs.client.read_flow_run_states(run.id)
        status, body = await api(
            "POST",
            "flow_runs",
            str(run.id),
            "set_state",
            body={"state": _state(proposal)},
            headers=runs.auth(run),
        )
        row = (run.state.name if run.state else None, proposal.name, expected)
        after = runs.client.read_flow_run_states(run.id)
        if expected == ALLOW:
            assert (status, body["status"]) == (200, "ACCEPT"), (row, body)
            assert after[-1].id == proposal.id, row
        elif expected == GATE:
            assert status == 200 and body["status"] in ("REJECT", "ABORT"), (row, status, body)
            assert after == before, row
        else:
            assert status == 403, (row, status, body)
            assert after == before, row


async def test_replaying_the_accepted_terminal_state_is_still_accepted(
    api: Api, runs: Runs
) -> None:
    """A client retrying its last write (lost response) gets the gate's answer again."""
    run = runs.make(Pending(), Running())
    auth = runs.auth(run)
    final = _state(Completed(message="done"))
    first = await api(
        "POST", "flow_runs", str(run.id), "set_state", body={"state": final}, headers=auth
    )
    again = await api(
        "POST", "flow_runs", str(run.id), "set_state", body={"state": final}, headers=auth
    )
    assert first[0] == again[0] == 200
    assert first[1]["status"] == again[1]["status"] == "ACCEPT"
    names = [s.name for s in runs.client.read_flow_run_states(run.id)]
    assert names == ["Scheduled", "Pending", "Running", "Completed"]


# -- a token stops working once its run is terminal -------------------------------------


@pytest.mark.parametrize("end", [Completed, Failed, Crashed, Cancelled])
async def test_token_stops_working_when_its_run_is_terminal(api: Api, runs: Runs, end: Any) -> None:
    run = runs.make(Pending(), Running(), end())
    auth = runs.auth(run)
    rid = str(run.id)
    answers = [
        await api("GET", "flow_runs", rid, headers=auth),
        await api("POST", "flow_runs", rid, "heartbeat", headers=auth),
        await api(
            "POST",
            "logs",
            "batch",
            body={"logs": [{"flow_run_id": rid, "message": "late"}]},
            headers=auth,
        ),
        await api("GET", "logs", params={"flow_run_id": rid}, headers=auth),
        await api("GET", "flows", str(run.flow_id), headers=auth),
        await api(
            "POST",
            "artifacts",
            body={"flow_run_id": rid, "key": "k", "data": {"a": 1}},
            headers=auth,
        ),
    ]
    for status, body in answers:
        assert status == 403, answers
        assert f"flow run {rid} is {end().name}" in body["message"], body
    assert runs.client.read_logs(run.id).logs == []
    assert runs.client.read_artifacts(flow_run_id=run.id) == []


async def test_token_of_a_deleted_run_opens_nothing(api: Api, runs: Runs) -> None:
    run = runs.make(Pending(), Running())
    runs.client.delete_flow_run(run.id)
    status, body = await api("GET", "flow_runs", str(run.id), headers=runs.auth(run))
    assert status == 403, body


# -- reproduction: a run token reaching other runs' task runs, logs, artifacts -----------


async def test_task_run_of_another_run_relabelled_to_the_token_run_is_refused(
    api: Api, runs: Runs
) -> None:
    mine = runs.make(Pending(), Running())
    other = runs.make(Pending(), Running())
    theirs = TaskRun(flow_run_id=other.id, name="theirs", task_key="t", state=Running())
    runs.client.write_task_runs([theirs], [(theirs.id, theirs.state)])  # type: ignore[list-item]

    relabelled = json.loads(theirs.model_dump_json())
    relabelled["flow_run_id"] = str(mine.id)
    failed = Failed(message="hijacked")
    status, body = await api(
        "POST",
        "task_runs",
        "batch",
        body={
            "task_runs": [{**relabelled, "state": _state(failed)}],
            "states": [{"task_run_id": str(theirs.id), "state": _state(failed)}],
        },
        headers=runs.auth(mine),
    )
    assert status == 403, body
    assert str(theirs.id) in body["message"]

    stored = runs.client.read_task_runs()
    assert [(t.id, t.flow_run_id) for t in stored if t.id == theirs.id] == [(theirs.id, other.id)]
    assert [s.type for s in runs.client.read_task_run_states(theirs.id)] == ["RUNNING"]


async def test_logs_and_artifacts_under_another_runs_task_run_are_refused(
    api: Api, runs: Runs
) -> None:
    mine = runs.make(Pending(), Running())
    other = runs.make(Pending(), Running())
    theirs = TaskRun(flow_run_id=other.id, name="theirs", task_key="t")
    runs.client.write_task_runs([theirs])
    auth = runs.auth(mine)
    log = {"flow_run_id": str(mine.id), "task_run_id": str(theirs.id), "message": "x"}
    status, body = await api("POST", "logs", "batch", body={"logs": [log]}, headers=auth)
    assert status == 403, body
    artifact = {"flow_run_id": str(mine.id), "task_run_id": str(theirs.id), "key": "k"}
    status, body = await api("POST", "artifacts", body=artifact, headers=auth)
    assert status == 403, body
    # Its own task runs, recorded or not yet (logs may arrive before their task run): fine.
    own = TaskRun(flow_run_id=mine.id, name="own", task_key="t")
    runs.client.write_task_runs([own])
    for task_run_id in (own.id, uuid4()):
        log = {"flow_run_id": str(mine.id), "task_run_id": str(task_run_id), "message": "x"}
        assert (await api("POST", "logs", "batch", body={"logs": [log]}, headers=auth))[0] == 204
    artifact = {"flow_run_id": str(mine.id), "task_run_id": str(own.id), "key": "k"}
    assert (await api("POST", "artifacts", body=artifact, headers=auth))[0] == 201


def _source(notebook: dict[str, Any]) -> str:
    return "".join(notebook["cells"][0]["source"])


def _write_output(root: Path, name: str, marker: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"print({marker!r})")]
    path = root / "outputs" / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


async def test_artifact_pointing_at_another_runs_output_is_refused_and_never_served(
    api: Api, runs: Runs, jp_root_dir: Path
) -> None:
    mine = runs.make(Pending(), Running())
    other = runs.make(Pending(), Running(), Completed())
    secret = _write_output(jp_root_dir, str(other.id), "the other run's secret")
    runs.client.update_flow_run(other.id, output_path=str(secret))
    auth = runs.auth(mine)

    stolen = {"flow_run_id": str(mine.id), "key": "output-notebook", "kind": "notebook"}
    for uri in (str(secret), f"file://{secret}", "outputs/" + secret.name):
        status, body = await api("POST", "artifacts", body={**stolen, "uri": uri}, headers=auth)
        assert status == 403, (uri, body)
        assert "body.uri" in body["message"] or "uri" in body["message"], body
    status, body = await api(
        "PATCH", "flow_runs", str(mine.id), body={"output_path": str(secret)}, headers=auth
    )
    assert status == 403, body

    status, body = await api("GET", "flow_runs", str(mine.id), "output", headers=auth)
    assert status == 404, body
    # Even an artifact stored by other means is never served unless it is the run's own output.
    runs.client.create_artifact(
        Artifact(flow_run_id=mine.id, key="output-notebook", kind="notebook", uri=str(secret))
    )
    status, body = await api("GET", "flow_runs", str(mine.id), "output", headers=auth)
    assert status == 404, body
    status, body = await api("GET", "flow_runs", str(mine.id), "output")
    assert status == 404, body


async def test_a_run_records_its_own_output_as_nbflow_execute_does(
    api: Api, runs: Runs, jp_root_dir: Path
) -> None:
    """The executor's writes: output_path and the notebook artifact under the run's own name."""
    mine = runs.make(Pending(), Running())
    own = _write_output(jp_root_dir, str(mine.id), "mine")
    auth = runs.auth(mine)
    status, body = await api(
        "PATCH", "flow_runs", str(mine.id), body={"output_path": str(own)}, headers=auth
    )
    assert status == 200, body
    notebook = json.loads(own.read_text())
    artifact = {
        "flow_run_id": str(mine.id),
        "key": "output-notebook",
        "kind": "notebook",
        "uri": str(own),
        "data": notebook,
    }
    assert (await api("POST", "artifacts", body=artifact, headers=auth))[0] == 201
    status, served = await api("GET", "flow_runs", str(mine.id), "output", headers=auth)
    assert status == 200 and _source(served) == "print('mine')"


async def test_the_output_endpoint_serves_only_the_runs_own_file(
    api: Api, runs: Runs, jp_root_dir: Path
) -> None:
    mine = runs.make(Pending(), Running(), Completed())
    own = _write_output(jp_root_dir, str(mine.id), "mine")
    runs.client.create_artifact(
        Artifact(flow_run_id=mine.id, key="output-notebook", kind="notebook", uri=str(own))
    )
    status, served = await api("GET", "flow_runs", str(mine.id), "output")
    assert status == 200 and _source(served) == "print('mine')"
    # A user-chosen output path (set by the user, not the token) is the run's own output.
    chosen = jp_root_dir / "reports" / "weekly.ipynb"
    chosen.parent.mkdir()
    chosen.write_text(json.dumps(make_notebook(["print('weekly')"])))
    other = runs.make(Pending(), Running(), Completed())
    runs.client.update_flow_run(other.id, output_path=str(chosen))
    status, served = await api("GET", "flow_runs", str(other.id), "output")
    assert status == 200 and _source(served) == "print('weekly')"


# -- the run's own process: everything nbflow execute does is within its capabilities ---


@pytest.mark.slow
async def test_nbflow_execute_does_everything_with_its_run_token_and_it_then_expires(
    api: Api,
    runs: Runs,
    jp_serverapp: Any,
    jp_http_port: int,
    tmp_path: Path,
) -> None:
    """Output path, notebook artifact, notebook task run, logs, states: no write refused."""
    status, dep = await api(
        "POST",
        "deployments",
        body={
            "flow_id": str(runs.flow.id),
            "name": "d",
            "notebook": make_notebook(["x = 6 * 7", "print(x)"]),
        },
    )
    assert status == 201, dep
    status, created = await api("POST", "deployments", dep["id"], "runs", body={})
    run_id = UUID(created["id"])
    runs.client.set_flow_run_state(run_id, Pending(), force=True)  # claimed, as a dispatcher does
    token = runs.app.mint_run_token(run_id)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NBFLOW")},
        "NBFLOW_API_URL": f"http://127.0.0.1:{jp_http_port}{jp_serverapp.base_url}nbflow/api/v1",
        "NBFLOW_API_TOKEN": token,
        "NBFLOW_HOME": str(tmp_path / "runner-home"),
    }
    command = [sys.executable, "-m", "nbflow", "execute", str(run_id)]
    done = await asyncio.get_running_loop().run_in_executor(
        None,
        lambda: subprocess.run(command, env=env, capture_output=True, text=True, timeout=240),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "-> 403" not in done.stderr, done.stderr

    run = runs.client.read_flow_run(run_id)
    assert run.state is not None and run.state.type == "COMPLETED", run.state
    assert run.output_path == str(
        tmp_path / "runner-home" / "outputs" / runs.flow.name / f"{run_id}.ipynb"
    )
    assert [t.state.type for t in runs.client.read_task_runs() if t.flow_run_id == run_id] == [
        "COMPLETED"
    ]
    assert any("42" in log.message for log in runs.client.read_logs(run_id).logs)
    status, served = await api("GET", "flow_runs", str(run_id), "output")
    assert status == 200 and "".join(served["cells"][1]["outputs"][0]["text"]) == "42\n"

    status, body = await api(
        "GET", "flow_runs", str(run_id), headers={"Authorization": f"token {token}"}
    )
    assert status == 403 and "Completed" in body["message"]
