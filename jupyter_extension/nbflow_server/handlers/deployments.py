"""``/deployments``: deploy a notebook (by path or uploaded), list, read, pause, delete, run now."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import nbformat
from jupyter_core.utils import ensure_async

from nbflow.exceptions import ValidationError
from nbflow.parameters import validate_parameters
from nbflow.runners import available_runners
from nbflow.schemas import Deployment, DeploymentCreate, FlowRun, FlowRunFilter
from nbflow.states import StateType
from nbflow_server.handlers.base import NbflowHandler, endpoint, flow_run_event
from nbflow_server.handlers.models import (
    DeploymentList,
    DeploymentQuery,
    DeploymentUpdate,
    RunDeploymentRequest,
)
from nbflow_server.paths import confine_path
from nbflow_server.services.scheduler import SCHEDULED_KEY_PREFIX, check_schedule

__all__ = ["DeploymentHandler", "DeploymentRunsHandler", "DeploymentsHandler"]


def _check_notebook(content: dict[str, Any], field: str) -> dict[str, Any]:
    """Validate an nbformat v4 notebook; name the field and the first problem."""
    try:
        node = nbformat.from_dict(content)  # type: ignore[no-untyped-call]
        nbformat.validate(node, version=4)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValidationError(
            field, "<notebook>", f"is not a valid nbformat 4 notebook ({first})"
        ) from None
    return content


def _check_runner(runner: str | None, field: str) -> None:
    """Refuse a runner that is not installed in this server, listing the installed ones."""
    known = available_runners()
    if runner is not None and runner not in known:
        raise ValidationError(
            field, runner, "is not an installed runner", f"use one of: {', '.join(known)}"
        )


class DeploymentsHandler(NbflowHandler):
    """``/deployments``."""

    @endpoint(
        "read",
        "List deployments (optionally of one flow)",
        query=DeploymentQuery,
        response=DeploymentList,
    )
    async def get(self) -> None:
        q = self.parse_query(DeploymentQuery)
        items = await self.call(
            self.client.read_deployments, flow_id=q.flow_id, limit=q.limit, offset=q.offset
        )
        self.write_model(DeploymentList(items=items))

    @endpoint(
        "write",
        "Deploy a flow: snapshot the notebook at notebook_path (relative to the server root) "
        "or the uploaded notebook; upserts by flow and name",
        body=DeploymentCreate,
        response=Deployment,
        status=201,
    )
    async def post(self) -> None:
        create = self.parse_body(DeploymentCreate)
        if "runner" in create.model_fields_set:
            _check_runner(create.runner, "body.runner")
        for i, schedule in enumerate(create.schedules):
            check_schedule(schedule, f"body.schedules.{i}")
        changes: dict[str, Any] = {}
        if create.notebook_path is not None:
            changes["notebook_path"] = confine_path(
                self.serverapp.root_dir, create.notebook_path, field="body.notebook_path"
            )
        if create.notebook is not None:
            changes["notebook"] = _check_notebook(create.notebook, "body.notebook")
        elif create.notebook_path is not None:
            changes["notebook"] = await self._read_notebook(changes["notebook_path"])
        else:
            raise ValidationError(
                "body.notebook_path",
                None,
                "is missing and no notebook was uploaded",
                "give notebook_path (relative to the server root) or notebook (its JSON)",
            )
        if "runner" not in create.model_fields_set:
            changes["runner"] = self.nbflow.default_runner
        flow = await self.call(self.client.read_flow, create.flow_id)
        validate_parameters(
            flow.parameters_schema,
            create.parameters,
            field="body.parameters",
            flow_name=flow.name,
            partial=True,
        )
        deployment = await self.call(
            self.client.create_deployment, create.model_copy(update=changes)
        )
        self.publish({"type": "deployment", "deployment": deployment.model_dump(mode="json")})
        self.nbflow.wake_scheduler()
        self.write_model(deployment, status=201)

    async def _read_notebook(self, path: str) -> dict[str, Any]:
        cm = self.serverapp.contents_manager
        if not await ensure_async(cm.file_exists(path)):  # type: ignore[no-untyped-call]
            raise ValidationError(
                "body.notebook_path", path, "does not exist under the server root"
            )
        model = await ensure_async(cm.get(path, content=True, type="notebook"))  # type: ignore[no-untyped-call]
        return _check_notebook(dict(model["content"]), "body.notebook_path")


class DeploymentHandler(NbflowHandler):
    """``/deployments/{deployment_id}``."""

    @endpoint(
        "read",
        "Read a deployment with its notebook snapshot",
        response=Deployment,
    )
    async def get(self, deployment_id: str) -> None:
        did = self.parse_uuid("deployment_id", deployment_id)
        if self.run_scope is not None:
            run = await self.call(self.client.read_flow_run, self.run_scope)
            if run.deployment_id != did:
                self.require_run_scope(None)
        self.write_model(await self.call(self.client.read_deployment, did))

    @endpoint(
        "write",
        "Change a deployment: pause/resume (paused), schedules, parameters, ...",
        body=DeploymentUpdate,
        response=Deployment,
    )
    async def patch(self, deployment_id: str) -> None:
        did = self.parse_uuid("deployment_id", deployment_id)
        update = self.parse_body(DeploymentUpdate)
        _check_runner(update.runner, "body.runner")
        for i, schedule in enumerate(update.schedules or []):
            check_schedule(schedule, f"body.schedules.{i}")
        changes = self.changes_of(update, nullable={"concurrency_limit", "description"})
        if update.parameters is not None:
            current = await self.call(self.client.read_deployment, did)
            flow = await self.call(self.client.read_flow, current.flow_id)
            validate_parameters(
                flow.parameters_schema,
                update.parameters,
                field="body.parameters",
                flow_name=flow.name,
                partial=True,
            )
        deployment = await self.call(self.client.update_deployment, did, **changes)
        if "schedules" in changes or deployment.paused:
            # Runs created for the old schedules (or while it is paused) must not start.
            await self.call(self._drop_auto_scheduled, did)
        self.publish({"type": "deployment", "deployment": deployment.model_dump(mode="json")})
        self.nbflow.wake_scheduler()
        self.write_model(deployment)

    def _drop_auto_scheduled(self, deployment_id: UUID) -> None:
        flt = FlowRunFilter(
            deployment_ids=[deployment_id], state_types=[StateType.SCHEDULED], limit=1000
        )
        for run in self.client.read_flow_runs(flt):
            if (run.idempotency_key or "").startswith(SCHEDULED_KEY_PREFIX):
                self.client.delete_flow_run(run.id)

    @endpoint("write", "Delete a deployment and its future scheduled runs", status=204)
    async def delete(self, deployment_id: str) -> None:
        did = self.parse_uuid("deployment_id", deployment_id)
        await self.call(self.client.delete_deployment, did)
        self.write_empty()


class DeploymentRunsHandler(NbflowHandler):
    """``/deployments/{deployment_id}/runs``: run a deployment now."""

    @endpoint(
        "execute",
        "Run a deployment now: creates a Scheduled flow run",
        body=RunDeploymentRequest,
        response=FlowRun,
        status=201,
    )
    async def post(self, deployment_id: str) -> None:
        did = self.parse_uuid("deployment_id", deployment_id)
        request = self.parse_body(RunDeploymentRequest)
        deployment = await self.call(self.client.read_deployment, did)
        # The lifecycle merges the deployment's parameters under the request's and validates
        # them (400 naming body.parameters.<name>); job variables are merged at claim time.
        run = await self.call(
            self.nbflow.lifecycle.run_deployment,
            deployment,
            parameters=request.parameters,
            scheduled_time=request.scheduled_time,
            name=request.name,
            tags=request.tags,
            job_variables=request.job_variables,
            idempotency_key=request.idempotency_key,
            field="body.parameters",
        )
        self.publish(flow_run_event(run))
        self.write_model(run, status=201)
