"""A deployed notebook pipeline whose parent and children all run in Docker containers.

The example pipeline (examples/pipeline) is deployed with the Docker runner; a worker
(the ``nbflow worker`` dispatcher, over the API) claims the parent, whose ``run_notebook``
calls ask the server for each child (the parent's container holds only its run token);
the worker then runs the children in containers of their own, with the parent's image,
volumes and environment.  Outputs travel through the result storage on a shared volume.
Needs ``NBFLOW_TEST_DOCKER=1``, a daemon and the test image (``scripts/docker-up.sh``,
``scripts/docker-images.sh``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbflow.runners.docker import DockerRunner
from nbflow.schemas import DeploymentCreate, Flow, FlowRun, FlowRunCreate, FlowRunFilter
from nbflow.states import Scheduled, StateType
from tests.runners.live import (
    TEST_IMAGE,
    LiveServer,
    require,
    serving_worker,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    require(
        "NBFLOW_TEST_DOCKER",
        "run scripts/docker-up.sh and scripts/docker-images.sh, then set NBFLOW_TEST_DOCKER=1",
    )
    live = start_server(tmp_path_factory.mktemp("docker-pipeline"), services=True)
    try:
        yield live
    finally:
        stop_server(live)


def _wait(server: LiveServer, run_id: Any, timeout: float = 420) -> FlowRun:
    deadline = time.monotonic() + timeout
    while True:
        run = server.client.read_flow_run(run_id)
        if run.state is not None and run.state.is_terminal:
            return run
        assert time.monotonic() < deadline, f"flow run {run_id} stayed {run.state}"
        time.sleep(0.5)


def test_a_pipeline_runs_parent_and_children_in_containers(server: LiveServer) -> None:
    root = server.home.parent  # the server's root: notebooks and NBFLOW_HOME, one volume
    folder = root / "pipe"
    shutil.copytree(EXAMPLE, folder)
    notebook = json.loads((folder / "pipeline.ipynb").read_text(encoding="utf-8"))
    flow = server.client.create_flow(Flow(name="sales_pipeline"))
    home = str(server.home)
    deployment = server.client.create_deployment(
        DeploymentCreate(
            flow_id=flow.id,
            name="pipe-docker",
            runner="docker",
            notebook=notebook,
            notebook_path="pipe/pipeline.ipynb",
            job_variables={
                "image": TEST_IMAGE,
                "image_pull_policy": "Never",
                "volumes": [f"{root}:{root}"],
                "working_dir": str(root),
                "env": {"NBFLOW_HOME": home, "NBFLOW_RESULTS_URL": f"{home}/results"},
                "labels": {"io.nbflow.test": "docker-pipeline"},
                "auto_remove": True,
            },
        )
    )
    parent = server.client.create_flow_run(
        FlowRunCreate(flow_id=flow.id, deployment_id=deployment.id, mode="batch", state=Scheduled())
    )
    with serving_worker(server, "docker", DockerRunner) as _:
        final = _wait(server, parent.id)
    assert final.state is not None and final.state.type is StateType.COMPLETED, final.state

    children = server.client.read_flow_runs(FlowRunFilter(parent_flow_run_ids=[parent.id]))
    assert sorted(c.flow_name or "" for c in children) == ["report", "sales", "sales"]
    for child in children:
        assert child.state is not None and child.state.type is StateType.COMPLETED, child
        assert child.runner == "docker"
        # each in a container of its own, claimed by the worker like any run
        assert child.infrastructure_id and child.infrastructure_id != final.infrastructure_id
        assert child.job_variables["image"] == TEST_IMAGE
        assert child.job_variables["working_dir"] == str(folder)
    response = server.client.read_output_notebook(parent.id)
    texts = ["".join(o.get("text", "")) for c in response["cells"] for o in c.get("outputs", [])]
    assert any("grand total 695" in t for t in texts), texts
