"""A deployed pipeline dispatched by a live ``nbflow server``: children through the dispatcher.

The dispatched parent holds only its run token, so ``run_notebook`` asks the server for
each child (``POST /flow_runs/{id}/children``); the server's dispatcher launches them on
the parent's runner.  The example pipeline completes with the joined outputs, and a
cancelled parent stops a running child's process.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from nbflow.client.http import HTTPClient
from nbflow.schemas import FlowRun, FlowRunFilter
from nbflow.states import StateType
from tests.cli.test_deploy import run_cli, write_notebook
from tests.live_server import LiveServer
from tests.process_state import alive

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that dispatches runs itself (subprocess runner)."""
    fast = ["--set", "NbflowApp.dispatch_interval=0.2", "--set", "NbflowApp.monitor_interval=0.2"]
    with LiveServer(tmp_path_factory.mktemp("pipe-server"), services=True, extra_args=fast) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[HTTPClient]:
    c = HTTPClient(server.api_url, token=server.token)
    yield c
    c.close()


def _wait(
    client: HTTPClient, run_id: UUID, done: StateType | None = None, timeout: float = 300
) -> FlowRun:
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(run_id)
        if run.state is not None and (run.state.type is done if done else run.state.is_terminal):
            return run
        assert time.monotonic() < deadline, f"flow run {run_id} stayed {run.state}"
        time.sleep(0.3)


def _children(client: HTTPClient, parent: UUID) -> list[FlowRun]:
    return client.read_flow_runs(FlowRunFilter(parent_flow_run_ids=[parent]))


def test_a_deployed_pipeline_runs_its_children_through_the_dispatcher(
    server: LiveServer, client: HTTPClient
) -> None:
    # In the server's root, as JupyterLab's users keep notebooks: children are files beside it.
    folder = server.root / "pipeline"
    shutil.copytree(EXAMPLE, folder)
    deployed = run_cli(
        server, "deploy", "pipeline/pipeline.ipynb", "--server-path", "--name", "pipe"
    )
    assert deployed.code == 0, deployed.out + deployed.err
    started = run_cli(server, "deployments", "run", "pipe", "--json")
    assert started.code == 0, started.err
    parent = _wait(client, UUID(started.json()["id"]))
    assert parent.state is not None and parent.state.type is StateType.COMPLETED, parent.state

    children = _children(client, parent.id)
    assert sorted(c.flow_name or "" for c in children) == ["report", "sales", "sales"]
    for child in children:
        assert child.state is not None and child.state.type is StateType.COMPLETED
        assert child.runner == parent.runner
        assert child.notebook_path is not None and child.notebook_path.startswith(str(folder))
        states = client.read_flow_run_states(child.id)
        # created for the dispatcher, which claimed and launched it
        assert states[0].type is StateType.SCHEDULED and "run_notebook" in (states[0].message or "")
        assert any(s.type is StateType.PENDING and "claimed" in (s.message or "") for s in states)
    regions = sorted(c.parameters.get("region", "") for c in children if c.flow_name == "sales")
    assert regions == ["EU", "US"]

    shown = run_cli(server, "runs", "show", str(parent.id), "--json")
    assert {c["id"] for c in shown.json()["children"]} == {str(c.id) for c in children}
    output = run_cli(server, "runs", "output", str(parent.id), "-o", "-")
    assert "grand total 695" in output.out


def test_cancelling_a_deployed_pipeline_stops_its_running_child(
    server: LiveServer, client: HTTPClient
) -> None:
    folder = server.root / "slowpipe"
    folder.mkdir()
    pid_file = folder / "child.pid"
    write_notebook(
        folder / "slow.ipynb",
        [
            "%%flow slow_child\nn = 1",
            f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)",
        ],
    )
    write_notebook(
        folder / "parent.ipynb",
        [
            "%load_ext nbflow\nfrom nbflow import run_notebook",
            "%%flow slow_parent\nx = 1",
            '%%task call\nrun_notebook("slow.ipynb")',
        ],
    )
    deployed = run_cli(
        server, "deploy", "slowpipe/parent.ipynb", "--server-path", "--name", "slowpipe"
    )
    assert deployed.code == 0, deployed.err
    started = run_cli(server, "deployments", "run", "slowpipe", "--json")
    parent_id = UUID(started.json()["id"])
    deadline = time.monotonic() + 180
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child never started its cell"
        time.sleep(0.3)
    kernel_pid = int(pid_file.read_text())
    (child,) = _children(client, parent_id)
    assert client.read_flow_run(child.id).state_type is StateType.RUNNING

    client.cancel_flow_run(parent_id)
    parent = _wait(client, parent_id, timeout=120)
    child = _wait(client, child.id, timeout=120)
    assert parent.state is not None and parent.state.type is StateType.CANCELLED, parent.state
    assert child.state is not None and child.state.type is StateType.CANCELLED, child.state
    deadline = time.monotonic() + 30
    while alive(kernel_pid):
        assert time.monotonic() < deadline, f"the child's kernel {kernel_pid} still runs"
        time.sleep(0.3)


def test_a_child_launched_by_nbflow_run_reports_with_its_own_run_token(
    server: LiveServer, client: HTTPClient
) -> None:
    # `nbflow run` against a server: the caller owns its children's processes; each child
    # gets a token for its own run, never the user's token the caller holds.
    folder = server.root / "tokens"
    folder.mkdir()
    write_notebook(
        folder / "tok_child.ipynb",
        [
            "%load_ext nbflow",
            "%%flow tok_child --outputs kind\nkind = None",
            "%%task look\nimport os\nkind = os.environ['NBFLOW_API_TOKEN'][:11]",
        ],
    )
    write_notebook(
        folder / "tok_parent.ipynb",
        [
            "%load_ext nbflow\nfrom nbflow import run_notebook",
            "%%flow tok_parent\nx = 1",
            '%%task call\nkind = run_notebook("tok_child.ipynb").outputs["kind"]\nprint("child token", kind)',
        ],
    )
    result = run_cli(server, "run", "tok_parent.ipynb", cwd=folder)
    assert result.code == 0, result.out + result.err
    parents = client.read_flow_runs(FlowRunFilter(flow_names=["tok_parent"]))
    output = run_cli(server, "runs", "output", str(parents[0].id), "-o", "-")
    assert "child token nbflow-run." in output.out
