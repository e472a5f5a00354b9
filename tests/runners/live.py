"""Helpers for the container runner tests: gates, a live ``nbflow server`` and run helpers.

The Docker and Kubernetes tests need the real things (``scripts/docker-up.sh``,
``scripts/docker-images.sh``, ``scripts/k8s-up.sh``).  Unset, their gate skips with the
reason; under CI (``CI`` set) it fails instead, so CI cannot silently lose them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from nbflow.client.http import HTTPClient
from nbflow.dispatch import Dispatcher, RunnerPool
from nbflow.notebook.document import find_flow_cell, new_notebook, parameters_schema
from nbflow.runners import Runner
from nbflow.runners.subprocess import SubprocessRunner
from nbflow.schemas import DeploymentCreate, Flow, FlowRun, FlowRunCreate
from nbflow.states import Pending, Scheduled, State, StateType

TEST_IMAGE = os.environ.get("NBFLOW_TEST_IMAGE", "nbflow:test")
K8S_NAMESPACE = os.environ.get("NBFLOW_TEST_K8S_NAMESPACE", "nbflow-test")
TOKEN = "runner-test-token"

FLOW_NOTEBOOK = [
    "%load_ext nbflow",
    "%%flow sales\nregion = 'EU'\nn = 2",
    "%%task extract\nraw = [region] * n",
    "%%task report\nassert n < 5, 'too many'\nprint(len(raw), raw)",
]
SLEEPY_NOTEBOOK = [
    "%load_ext nbflow",
    "%%flow sleepy\nmarker = ''\nseconds = 300",
    "import pathlib\npathlib.Path(marker).write_text('started')",
    "import time\ntime.sleep(seconds)",
]


def require(flag: str, how: str) -> None:
    """Skip (or fail under CI) unless the environment variable ``flag`` is ``1``."""
    if os.environ.get(flag) == "1":
        return
    reason = f"{flag} is not 1; {how}"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """A running ``nbflow server`` subprocess and a user client for it."""

    url: str
    token: str
    home: Path
    secret_file: Path
    client: HTTPClient
    proc: subprocess.Popen[bytes]

    def run_token(self, flow_run: FlowRun) -> str:
        """Mint the run's API token with the server's secret (what the dispatcher does)."""
        from nbflow_server.tokens import RunTokenSigner

        return RunTokenSigner(self.secret_file.read_bytes().strip()).mint(flow_run.id)

    def deploy(self, cells: list[str], runner: str, **fields: Any) -> tuple[Flow, Any]:
        """Create a flow (its parameters from the ``%%flow`` cell) and a deployment of it."""
        notebook = new_notebook(cells)
        flow_cell = find_flow_cell(notebook)
        schema = parameters_schema(flow_cell.parameters) if flow_cell is not None else {}
        flow = self.client.create_flow(
            Flow(name=f"f-{time.monotonic_ns()}", parameters_schema=schema)
        )
        deployment = self.client.create_deployment(
            DeploymentCreate(
                flow_id=flow.id,
                name="d",
                runner=runner,
                notebook=notebook,
                **fields,
            )
        )
        return flow, deployment

    def new_run(
        self,
        cells: list[str],
        runner: str,
        parameters: dict[str, Any] | None = None,
        state: State | None = None,
    ) -> FlowRun:
        """Create a Pending (claimed) batch run of a new deployment of ``cells``."""
        flow, deployment = self.deploy(cells, runner)
        return self.client.create_flow_run(
            FlowRunCreate(
                flow_id=flow.id,
                deployment_id=deployment.id,
                parameters=parameters or {},
                runner=runner,
                mode="batch",
                state=state or Pending(),
            )
        )

    def new_sleepy_run(self, runner: str) -> tuple[FlowRun, Path]:
        """Create a run that writes a marker file under the home, then sleeps 300 s."""
        marker = self.home / f"started-{time.monotonic_ns()}"
        return self.new_run(SLEEPY_NOTEBOOK, runner, {"marker": str(marker)}), marker

    def wait_started(self, run: FlowRun, marker: Path, timeout: float = 240) -> None:
        """Wait until the run is Running and its sleeping cell has started."""
        self.wait_state(run.id, "RUNNING", timeout=timeout)
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert time.monotonic() < deadline, "the sleeping cell never started"
            time.sleep(0.2)

    def wait_state(self, run_id: UUID, *types: str, timeout: float = 240) -> FlowRun:
        """Poll until the run's state type is one of ``types``; return the run."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.client.read_flow_run(run_id)
            if run.state is not None and run.state.type.value in types:
                return run
            assert time.monotonic() < deadline, f"run stayed {run.state}"
            time.sleep(0.2)


def start_server(tmp: Path, *extra: str, services: bool = False) -> LiveServer:
    """Start ``nbflow server`` on a free 127.0.0.1 port and wait until it answers."""
    port = free_port()
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    secret = tmp / "secret"
    env = {
        **os.environ,
        "NBFLOW_HOME": str(home),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
    }
    env.pop("NBFLOW_API_URL", None)
    env.pop("NBFLOW_API_TOKEN", None)
    command = [
        sys.executable, "-m", "nbflow", "server", "--port", str(port), "--token", TOKEN,
        "--root-dir", str(tmp), "--set", f"NbflowApp.secret_file={secret}", *extra,
    ]  # fmt: skip
    if not services:
        command.append("--no-services")
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/nbflow/api/v1"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (tmp / "server.log").read_text()
        try:
            httpx.get(f"{url}/openapi.json", headers={"Authorization": f"token {TOKEN}"})
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, (tmp / "server.log").read_text()
            time.sleep(0.2)
    client = HTTPClient(url, token=TOKEN)
    return LiveServer(url, TOKEN, home, secret, client, proc)


def stop_server(server: LiveServer) -> None:
    """Stop the server (SIGINT, then SIGKILL)."""
    server.client.close()
    server.proc.send_signal(signal.SIGINT)
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live ``nbflow server`` (API only, no services) on 127.0.0.1 for this module."""
    server = start_server(tmp_path_factory.mktemp("server"))
    try:
        yield server
    finally:
        stop_server(server)


class QuickRunner(SubprocessRunner):
    """The subprocess runner launching ``python -c pass`` instead of ``nbflow execute``.

    For tests of who claims and submits a run (the server's dispatcher, workers), where
    executing the notebook is beside the point.
    """

    def command(self, flow_run: FlowRun, python: str | None = None) -> list[str]:
        """Return a command that exits at once."""
        return [python or sys.executable, "-c", "pass"]


def make_worker(
    server: LiveServer,
    runner_name: str,
    runner_cls: type[Runner] = QuickRunner,
    **kwargs: Any,
) -> tuple[Dispatcher, HTTPClient]:
    """Return the dispatcher of ``nbflow worker`` over the server's API, built as the CLI does."""
    client = HTTPClient(server.url, token=server.token)

    def token(run: FlowRun) -> str | None:
        return dispatcher.token_for(run) or client.mint_run_token(run.id)

    def make(name: str) -> Runner:
        options: dict[str, Any] = {}
        if issubclass(runner_cls, SubprocessRunner):
            options["output"] = lambda _: None
        return runner_cls(client=client, api_url=server.url, token_factory=token, **options)

    name = kwargs.pop("name", "test")
    dispatcher = Dispatcher(
        client,
        RunnerPool(make),
        runner_names=[runner_name],
        claimer=f"worker {name}/{runner_name}",
        **kwargs,
    )
    return dispatcher, client


@contextmanager
def serving_worker(
    server: LiveServer, runner_name: str, runner_cls: type[Runner], **kwargs: Any
) -> Iterator[tuple[Dispatcher, HTTPClient]]:
    """Run a worker (passes every 0.2 s) in a thread for the duration of the block."""
    worker, client = make_worker(server, runner_name, runner_cls, **kwargs)
    stop = threading.Event()
    thread = threading.Thread(target=worker.serve, args=(stop, 0.2), daemon=True)
    thread.start()
    try:
        yield worker, client
    finally:
        stop.set()
        thread.join(60)
        worker.close()
        worker.runners.close()
        client.close()


def scheduled_run(
    server: LiveServer, cells: list[str], runner: str, parameters: dict[str, Any], **job: Any
) -> FlowRun:
    """Create a due (Scheduled) batch run of a new deployment of ``cells``, for a worker."""
    flow, deployment = server.deploy(cells, runner, job_variables=job)
    return server.client.create_flow_run(
        FlowRunCreate(
            flow_id=flow.id,
            deployment_id=deployment.id,
            parameters=parameters,
            mode="batch",
            state=Scheduled(),
        )
    )


def cancel_through_worker(
    server: LiveServer,
    runner_name: str,
    runner_cls: type[Runner],
    left: Callable[[str], bool],
    *,
    grace: float = 5.0,
    **job: Any,
) -> None:
    """Run a sleeping notebook through a worker, cancel it, check nothing of it is left.

    ``left(infrastructure id)`` tells whether anything of the run's process is left; it must
    turn False within ``grace`` + 5 s of the cancel.  The run ends Cancelled and stays so.
    """
    marker = server.home / f"started-{time.monotonic_ns()}"
    run = scheduled_run(server, SLEEPY_NOTEBOOK, runner_name, {"marker": str(marker)}, **job)
    with serving_worker(server, runner_name, runner_cls, kill_grace=grace) as (worker, user):
        server.wait_started(run, marker)
        infra = server.client.read_flow_run(run.id).infrastructure_id
        assert infra is not None and left(infra)
        result = user.cancel_flow_run(run.id)
        assert result.state is not None and result.state.type is StateType.CANCELLING
        cancelled_at = time.monotonic()
        while left(infra):
            assert time.monotonic() - cancelled_at < grace + 5, f"{infra} is still there"
            time.sleep(0.2)
        final = server.wait_state(run.id, "CANCELLED", timeout=30)
        assert worker.wait_all(60)
    names = [s.name for s in server.client.read_flow_run_states(run.id)]
    assert names[-2:] == ["Cancelling", "Cancelled"], names
    time.sleep(1)  # more passes of the worker: the run stays Cancelled
    assert server.client.read_flow_run(run.id).state == final.state
