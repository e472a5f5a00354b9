"""A deployment's run mode and kernel through the subprocess runner: real runs of ``nbflow
execute``, a real kernel and store.  ``snapshot`` runs the notebook as deployed, ``file``
the file as it is when the run starts; ``kernel_name`` overrides the notebook's kernelspec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbflow.client.embedded import EmbeddedClient
from nbflow.notebook import document as nbs
from nbflow.runners.subprocess import SubprocessRunner
from nbflow.schemas import Deployment, DeploymentCreate, Flow, FlowRunCreate
from nbflow.settings import Settings
from nbflow.states import Pending, StateType

pytestmark = pytest.mark.slow


def _run_output(client: EmbeddedClient, deployment: Deployment, root: Path) -> list[str]:
    """Run the deployment once (working directory: ``root``, as the dispatcher gives it)."""
    run = client.store.create_flow_run(
        FlowRunCreate(
            flow_id=deployment.flow_id,
            deployment_id=deployment.id,
            state=Pending(),
            notebook_path=deployment.notebook_path,
            mode="batch",
        )
    )
    runner = SubprocessRunner(client=client)
    infra = runner.submit(run, {"working_dir": str(root)})
    assert runner.wait(infra, timeout=240) == 0
    final = client.read_flow_run(run.id)
    assert final.state is not None and final.state.type is StateType.COMPLETED, final.state
    assert final.output_path
    nb = json.loads(Path(final.output_path).read_text())
    return ["".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", [])]


def test_snapshot_mode_runs_the_deployed_notebook_file_mode_the_file_now(
    client: EmbeddedClient, tmp_path: Path, settings: Settings
) -> None:
    path = tmp_path / "report.ipynb"
    deployed = nbs.new_notebook(["value = 'as deployed'", "print(value)"])
    path.write_text(json.dumps(deployed))
    flow = client.create_flow(Flow(name="modes"))
    deployment = client.create_deployment(
        DeploymentCreate(
            flow_id=flow.id, name="daily", notebook=deployed, notebook_path="report.ipynb"
        )
    )
    # Edited after deploying: only a file-mode run sees it.
    path.write_text(json.dumps(nbs.new_notebook(["value = 'edited'", "print(value)"])))

    assert "as deployed\n" in _run_output(client, deployment, tmp_path)
    file_mode = client.update_deployment(deployment.id, run_mode="file")
    assert file_mode.version == 2
    outputs = _run_output(client, file_mode, tmp_path)
    assert "edited\n" in outputs and "as deployed\n" not in outputs


def test_kernel_name_overrides_the_notebooks_kernelspec(
    client: EmbeddedClient, tmp_path: Path, settings: Settings
) -> None:
    nb = nbs.new_notebook(["print('ran on', 'python3')"], kernel_name="no-such-kernel")
    flow = client.create_flow(Flow(name="kernels"))
    deployment = client.create_deployment(
        DeploymentCreate(
            flow_id=flow.id,
            name="k",
            notebook=nb,
            notebook_path="k.ipynb",
            kernel_name="python3",
        )
    )
    assert "ran on python3\n" in _run_output(client, deployment, tmp_path)
