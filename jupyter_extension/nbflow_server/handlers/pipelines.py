"""``/flow_runs/{id}/children``: a running pipeline asks the server to start a child notebook run.

``run_notebook`` in a run the server dispatched holds only that run's token, which may not
create runs or choose how they execute (docs/security.md).  So it sends the child notebook
and its parameters here, and the lifecycle creates a Scheduled child on the parent's own
runner with the parent's own job variables; the dispatcher launches it like any run.  The
parent follows the child (it may read and cancel its children) and collects its outputs.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any
from uuid import UUID

from pydantic import Field

from nbflow.exceptions import NotFound, ValidationError
from nbflow.notebook import document as nbs
from nbflow.schemas import Flow, FlowRun
from nbflow_server.handlers.base import ApiError, NbflowHandler, endpoint, flow_run_event
from nbflow_server.handlers.deployments import _check_notebook, _check_runner
from nbflow_server.handlers.models import _Body

__all__ = ["ChildRunRequest", "ChildRunsHandler"]


class ChildRunRequest(_Body):
    """A child notebook run of a running pipeline run."""

    #: The child notebook (nbformat 4 JSON), as the parent's process reads it.
    notebook: dict[str, Any]
    #: The child notebook's absolute path where the parent runs (its runner sees the same).
    notebook_path: str = Field(min_length=1, max_length=4096)
    parameters: dict[str, Any] = Field(default_factory=dict)
    #: The parent's task run that calls ``run_notebook``.
    parent_task_run_id: UUID | None = None
    #: A user's choice of runner (default: the parent's); a run token may not choose.
    runner: str | None = Field(default=None, max_length=200)
    #: A user's choice of job variables (default: the parent's); a run token may not choose.
    job_variables: dict[str, Any] | None = None
    #: Makes a replayed request return the child it already created.
    idempotency_key: str | None = Field(default=None, max_length=200)


def flow_of_notebook(notebook: dict[str, Any], path: str, field: str) -> Flow:
    """Return the flow a child notebook registers: its name and parameters schema."""
    content = _check_notebook(notebook, field)
    try:
        nb = nbs.load_notebook(content, source=path)
        schema = nbs.notebook_parameters_schema(nb, source=path)
        name = nbs.flow_name(nb, PurePosixPath(path).name)
    except nbs.NotebookFormatError as exc:
        raise ValidationError(field, path, exc.problem) from None
    return Flow(name=name, parameters_schema=schema, source=path)


class ChildRunsHandler(NbflowHandler):
    """``/flow_runs/{flow_run_id}/children``."""

    @endpoint(
        "execute",
        "Start a child run of a running pipeline run (run_notebook): a Scheduled batch run "
        "of the given notebook, linked to the parent, on the parent's runner with the "
        "parent's job variables unless the user chooses others; the dispatcher launches it. "
        "409 when the parent is not Running",
        body=ChildRunRequest,
        response=FlowRun,
        status=201,
    )
    async def post(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        request = self.parse_body(ChildRunRequest)
        if not PurePosixPath(request.notebook_path).is_absolute():
            raise ValidationError(
                "body.notebook_path",
                request.notebook_path,
                "is not absolute",
                "send the path where the parent's process reads the notebook",
            )
        flow = flow_of_notebook(request.notebook, request.notebook_path, "body.notebook")
        _check_runner(request.runner, "body.runner")
        if self.token_run is not None:
            await self._check_token_request(request, flow)
        run = await self.call(
            self.nbflow.lifecycle.create_child_run,
            rid,
            flow,
            notebook_path=request.notebook_path,
            parameters=request.parameters,
            parent_task_run_id=request.parent_task_run_id,
            runner=request.runner,
            job_variables=request.job_variables,
            idempotency_key=request.idempotency_key,
            field="body.parameters",
        )
        self.publish(flow_run_event(run))
        self.nbflow.wake_dispatcher()
        self.write_model(run, status=201)

    async def _check_token_request(self, request: ChildRunRequest, flow: Flow) -> None:
        """A run token asks only for what: never how (runner, job variables) or a flow change."""
        assert self.token_run is not None
        for name in ("runner", "job_variables"):
            value = getattr(request, name)
            if value is not None and not (name == "runner" and value == self.token_run.runner):
                why = (
                    f"a run token may not choose body.{name} of a child run: the child runs on "
                    f"its parent's runner ({self.token_run.runner}) with the parent's job "
                    "variables; set them on the parent's deployment instead"
                )
                raise ApiError(403, why, [{"field": f"body.{name}", "problem": why}])
        try:
            existing = await self.call(self.nbflow.lifecycle.store.read_flow_by_name, flow.name)
        except NotFound:
            return
        if existing.parameters_schema != flow.parameters_schema:
            why = (
                f"flow {flow.name!r} is registered with other parameters than the child "
                f"notebook {request.notebook_path} declares, and a run token may not change a "
                "flow: run the child once with `nbflow run` (or redeploy it) to register them"
            )
            raise ApiError(403, why, [{"field": "body.notebook", "problem": why}])
