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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from nbflow.client.http import HTTPClient
from nbflow.notebook.document import new_notebook
from nbflow.runners.subprocess import SubprocessRunner
from nbflow.schemas import DeploymentCreate, Flow, FlowRun, FlowRunCreate
from nbflow.states import Pending, State

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
        """Create a flow and a deployment carrying the notebook snapshot."""
        flow = self.client.create_flow(Flow(name=f"f-{time.monotonic_ns()}"))
        deployment = self.client.create_deployment(
            DeploymentCreate(
                flow_id=flow.id,
                name="d",
                runner=runner,
                notebook=new_notebook(cells),
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
