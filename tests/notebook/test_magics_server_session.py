"""The magics in a kernel started by the server (a JupyterLab session, environment injected
by the server): ``%%flow --schedule`` deploys, ``%nbflow run`` creates an ad-hoc run of the
notebook's path under the root, which the server's dispatcher executes to Completed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from uuid import UUID

import httpx
import nbformat
import pytest
from jupyter_client import BlockingKernelClient

from nbflow.client.http import HTTPClient
from nbflow.states import StateType
from tests.live_server import LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("session-server"), services=True) as live:
        yield live


def _execute(kc: BlockingKernelClient, code: str, timeout: float = 60) -> str:
    """Run code in the kernel; return its stream and error output."""
    msg_id = kc.execute(code)
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            out.append(f"{content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == "idle":
            break
    return "".join(out)


def test_nbflow_run_in_a_server_session_runs_the_notebook_path(server: LiveServer) -> None:
    (server.root / "sub").mkdir()
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("%load_ext nbflow"),
            nbformat.v4.new_code_cell("%%flow session_flow\nn: int = 2"),
            nbformat.v4.new_code_cell("%%task\nsquare = n * n\nprint('square', square)"),
        ]
    )
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, server.root / "sub" / "report.ipynb")
    headers = {"Authorization": f"token {server.token}"}
    session = httpx.post(
        f"{server.url}/api/sessions",
        headers=headers,
        json={"path": "sub/report.ipynb", "type": "notebook", "kernel": {"name": "python3"}},
        timeout=60,
    ).json()
    kernel_id = session["kernel"]["id"]
    kc = BlockingKernelClient(
        connection_file=str(server.base / "runtime" / f"kernel-{kernel_id}.json")
    )
    kc.load_connection_file()
    kc.start_channels()
    client = HTTPClient(server.api_url, token=server.token)
    try:
        kc.wait_for_ready(timeout=60)
        assert "NBFLOW_API_URL" not in _execute(kc, "%load_ext nbflow")
        # %%flow --schedule in a server's kernel deploys the saved notebook (relative path).
        flow_text = _execute(kc, "%%flow session_flow --interval 1h\nn: int = 2")
        assert "deployed 'report' of flow 'session_flow'" in flow_text, flow_text
        (deployment,) = client.read_deployments()
        assert deployment.schedules[0].interval_seconds == 3600
        _execute(kc, "%nbflow finish")
        text = _execute(kc, "%nbflow run -p n=7")
        assert "run id:" in text, text
        run_id = UUID(next(line.split()[-1] for line in text.splitlines() if "run id:" in line))
        run = client.read_flow_run(run_id)
        assert run.notebook_path == "sub/report.ipynb" and run.mode == "batch"
        assert run.parameters == {"n": 7} and run.deployment_id is None
        # The dispatcher starts it; nbflow execute runs the notebook with the injected n.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_terminal:
                break
            time.sleep(0.5)
        assert run.state_type is StateType.COMPLETED, (run.state, server.log.read_text()[-3000:])
    finally:
        kc.stop_channels()
        httpx.delete(f"{server.url}/api/sessions/{session['id']}", headers=headers, timeout=60)
        client.close()
