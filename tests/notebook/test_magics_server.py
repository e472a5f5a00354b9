"""``%%flow --schedule``, ``%nbflow deploy`` and ``%nbflow run`` in a real kernel against a live server."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import pytest

from nbflow.client.http import HTTPClient
from nbflow.schemas import FlowRunFilter
from nbflow.states import StateType
from tests.live_server import LiveServer
from tests.notebook.conftest import KernelRunner, outputs_text

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("magics-server")) as live:
        yield live


def test_schedule_deploy_and_run_from_the_kernel(kernel: KernelRunner, server: LiveServer) -> None:
    path = kernel.notebook(
        [
            "%load_ext nbflow",
            "%%flow sales --schedule '0 6 * * *' --timezone Europe/Berlin\n"
            "region = 'EU'\nn: int = 4",
            "%%task\ny = n * 2",
            "%nbflow deploy --name manual --interval 1h -p n=5",
            "%nbflow run -p n=6",
            "%nbflow finish",
            "from nbflow.client import get_client\n"
            "from nbflow.schemas import FlowRunFilter\n"
            "scheduled = get_client().read_flow_runs(FlowRunFilter(state_types=['SCHEDULED']))\n"
            "get_ipython().run_line_magic('nbflow', f'cancel {scheduled[0].id}')",
            "%nbflow deploy --runner nosuch",
        ],
        "daily_sales.ipynb",
    )
    env = {"NBFLOW_API_URL": server.api_url, "NBFLOW_API_TOKEN": server.token}
    nb = kernel.run(path, allow_errors=True, extra_env=env)
    text = [outputs_text(c) for c in nb.cells]
    client = HTTPClient(server.api_url, token=server.token)
    try:
        # %%flow --schedule created the deployment named after the notebook.
        assert "deployed 'daily_sales' of flow 'sales'" in text[1], text[1]
        assert "06:00 CET" in text[1] and "could not snapshot" not in text[1]
        deployments = {d.name: d for d in client.read_deployments()}
        scheduled = deployments["daily_sales"]
        assert scheduled.schedules[0].cron == "0 6 * * *"
        assert scheduled.schedules[0].timezone == "Europe/Berlin"
        assert scheduled.notebook is not None  # the saved notebook was uploaded
        flow = client.read_flow(scheduled.flow_id)
        assert (
            flow.name == "sales" and flow.parameters_schema["properties"]["n"]["type"] == "integer"
        )

        # %nbflow deploy: options from the line, defaults from the %%flow line.
        assert "deployed 'manual' of flow 'sales'" in text[3] and "every 3600s" in text[3]
        manual = client.read_deployments()
        manual_dep = next(d for d in manual if d.name == "manual")
        assert (
            manual_dep.parameters == {"n": 5} and manual_dep.schedules[0].interval_seconds == 3600
        )

        # %nbflow run: a Scheduled batch run of the deployment made in this kernel.
        assert "run id:" in text[4], text[4]
        run_id = next(line.split()[-1] for line in text[4].splitlines() if "run id:" in line)
        run = client.read_flow_run(UUID(run_id))
        assert run.deployment_id == manual_dep.id and run.parameters == {"n": 6}
        # ... which %nbflow cancel then cancelled through the server (not started: Cancelled).
        assert run.mode == "batch" and run.state_type is StateType.CANCELLED, text[6]

        # The interactive run itself was recorded on the server.
        (interactive,) = client.read_flow_runs(
            FlowRunFilter(flow_names=["sales"], state_types=[StateType.COMPLETED])
        )
        assert interactive.mode == "interactive" and interactive.parameters == {
            "region": "EU",
            "n": 4,
        }

        # A bad option is the server's message naming the field.
        assert "body.runner" in text[7] and "nosuch" in text[7]
    finally:
        client.close()
