"""Create and launch a batch run of a notebook: shared by ``nbflow run``/``batch`` and pipelines.

:func:`create_notebook_run` registers the notebook's flow and creates a claimed (Pending)
batch run of it; :func:`launch` submits it to a runner.  The caller owns the launched
process: it follows it and stops it (``nbflow run``, :mod:`nbflow.notebook.pipeline`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from nbflow.client.base import Client
from nbflow.notebook import document as nbs
from nbflow.orchestration.job_variables import merge_job_variables
from nbflow.runners import Runner
from nbflow.schemas import Flow, FlowRun, FlowRunCreate
from nbflow.states import Pending

__all__ = ["NotebookRunSpec", "create_notebook_run", "launch", "prepare_notebook"]


@dataclass(frozen=True)
class NotebookRunSpec:
    """A notebook read as a flow: its path, name, parameters schema and task cell count."""

    path: Path
    flow_name: str
    schema: dict[str, Any]
    task_cells: int


def prepare_notebook(path: str | Path) -> NotebookRunSpec:
    """Read a notebook as a flow; a bad notebook is a usage error naming the file."""
    p = Path(path).resolve()
    nb = nbs.read_notebook(p)
    schema = nbs.notebook_parameters_schema(nb, source=str(p))
    tasks = len(nbs.task_cells(nb)) or 1  # no %%task cells: the notebook is one task
    return NotebookRunSpec(p, nbs.flow_name(nb, p), schema, tasks)


def create_notebook_run(
    client: Client,
    spec: NotebookRunSpec,
    parameters: Mapping[str, Any],
    *,
    runner: str = "subprocess",
    job_variables: Mapping[str, Any] | None = None,
    tags: list[str] | None = None,
    parent_flow_run_id: UUID | None = None,
    parent_task_run_id: UUID | None = None,
    message: str = "launched from the command line",
) -> FlowRun:
    """Register the notebook's flow and create a claimed (Pending) batch run of it.

    ``parent_*`` link a pipeline's child run to the flow run and task run that ran it.
    """
    values = nbs.validate_parameters(spec.schema, parameters)
    flow = client.create_flow(
        Flow(name=spec.flow_name, parameters_schema=spec.schema, source=str(spec.path))
    )
    variables = merge_job_variables({"working_dir": str(spec.path.parent)}, job_variables)
    return client.create_flow_run(
        FlowRunCreate(
            flow_id=flow.id,
            parameters=values,
            state=Pending(message=message),
            runner=runner,
            job_variables=variables,
            notebook_path=str(spec.path),
            mode="batch",
            tags=list(tags or []),
            parent_flow_run_id=parent_flow_run_id,
            parent_task_run_id=parent_task_run_id,
        )
    )


def launch(client: Client, run: FlowRun, runner: Runner) -> str:
    """Submit the run to the runner and record its infrastructure id."""
    infrastructure_id = runner.submit(run)
    client.update_flow_run(run.id, infrastructure_id=infrastructure_id)
    return infrastructure_id
