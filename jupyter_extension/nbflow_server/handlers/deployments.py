"""``/deployments``: deploy a notebook (by path or uploaded), list, read, edit (versioned,
with optimistic concurrency and a dry run), versions and their code diffs, delete, run now;
``/run_environments``: the kernelspecs, runners and images a deployment can pick."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.utils import ensure_async

from nbflow.exceptions import DeploymentVersionConflict, ValidationError
from nbflow.orchestration.store.deployment_versions import DeploymentVersionStore
from nbflow.parameters import validate_parameters
from nbflow.runners import available_runners, get_runner
from nbflow.schemas import (
    Deployment,
    DeploymentCreate,
    DeploymentVersionDetail,
    FieldChange,
    FlowRun,
    FlowRunFilter,
)
from nbflow.states import StateType
from nbflow_server.handlers.base import ApiError, NbflowHandler, endpoint, flow_run_event
from nbflow_server.handlers.models import (
    DeploymentChanges,
    DeploymentList,
    DeploymentQuery,
    DeploymentUpdate,
    DeploymentVersionDiff,
    DeploymentVersionList,
    DeploymentVersionQuery,
    KernelSpecInfo,
    RunDeploymentRequest,
    RunEnvironments,
)
from nbflow_server.paths import confine_path
from nbflow_server.services.scheduler import SCHEDULED_KEY_PREFIX, check_schedule

__all__ = [
    "DeploymentChangesHandler",
    "DeploymentHandler",
    "DeploymentRunsHandler",
    "DeploymentVersionDiffHandler",
    "DeploymentVersionHandler",
    "DeploymentVersionsHandler",
    "DeploymentsHandler",
    "RunEnvironmentsHandler",
]

#: jupyter_server's id of an anonymous user (``uuid4().hex``).
_ANONYMOUS_ID = re.compile(r"[0-9a-f]{32}")
#: Fields of a PATCH that steer the update instead of being changed.
_CONTROL_FIELDS = frozenset({"expected_version", "resnapshot"})


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


class _DeploymentHandler(NbflowHandler):
    """What the deployment endpoints share: validation, snapshots, versions, authorship."""

    @property
    def versions(self) -> DeploymentVersionStore:
        """Versioned writes and version reads over the server's store."""
        return DeploymentVersionStore(self.nbflow.lifecycle.store)

    def author(self) -> str:
        """Who makes this change: the Jupyter user's name, else ``api``.

        jupyter_server gives a request authenticated by a bare token (no login) a fresh
        anonymous user each time (a random hex id): that is ``api``; an anonymous browser
        session keeps its generated name (``Anonymous Io``).
        """
        user = self.current_user
        username = getattr(user, "username", None) or (user if isinstance(user, str) else "")
        if not username:
            return "api"
        if _ANONYMOUS_ID.fullmatch(str(username)):
            by_token = "token" in self.request.headers.get("Authorization", "").lower() or (
                self.get_argument("token", None) is not None
            )
            name = getattr(user, "name", None)
            return "api" if by_token or not name else str(name)
        return str(username)

    @property
    def kernelspecs(self) -> KernelSpecManager:
        """The server's kernelspec manager (what ``kernel_name`` may name)."""
        ksm = self.serverapp.kernel_spec_manager
        return ksm if ksm is not None else KernelSpecManager()

    def check_kernel(self, name: str | None, field: str) -> None:
        """Refuse a kernelspec this server does not have, listing the ones it has."""
        if name is None:
            return
        specs = self.kernelspecs.find_kernel_specs()
        if name not in specs:
            raise ValidationError(
                field,
                name,
                "is not a kernelspec of this server",
                f"use one of: {', '.join(sorted(specs)) or 'none installed'}",
            )

    async def read_notebook(self, path: str, field: str) -> dict[str, Any]:
        """Return the notebook at ``path`` (under the server root) as a snapshot."""
        cm = self.serverapp.contents_manager
        if not await ensure_async(cm.file_exists(path)):  # type: ignore[no-untyped-call]
            raise ValidationError(field, path, "does not exist under the server root")
        model = await ensure_async(cm.get(path, content=True, type="notebook"))  # type: ignore[no-untyped-call]
        return _check_notebook(dict(model["content"]), field)

    def expected_version(self, update: DeploymentUpdate) -> int | None:
        """Return the version the edit was made from: the body's, else ``If-Match``."""
        if update.expected_version is not None:
            return update.expected_version
        header = self.request.headers.get("If-Match")
        if not header or header.strip() == "*":
            return None
        text = header.strip().removeprefix("W/").strip('"')
        try:
            return int(text)
        except ValueError:
            raise ValidationError(
                "header.If-Match", header, "is not a deployment version", 'send e.g. If-Match: "3"'
            ) from None

    async def changes_of_update(self, did: UUID, update: DeploymentUpdate) -> dict[str, Any]:
        """Validate a PATCH body and return the fields it changes (with a new snapshot
        when it names a new path, uploads a notebook or asks for one)."""
        _check_runner(update.runner, "body.runner")
        for i, schedule in enumerate(update.schedules or []):
            check_schedule(schedule, f"body.schedules.{i}")
        self.check_kernel(update.kernel_name, "body.kernel_name")
        changes = self.changes_of(
            update, nullable={"concurrency_limit", "description", "kernel_name"}
        )
        for name in _CONTROL_FIELDS:
            changes.pop(name, None)
        current = await self.call(self.client.read_deployment, did)
        if update.parameters is not None:
            flow = await self.call(self.client.read_flow, current.flow_id)
            validate_parameters(
                flow.parameters_schema,
                update.parameters,
                field="body.parameters",
                flow_name=flow.name,
                partial=True,
            )
        if update.notebook_path is not None:
            changes["notebook_path"] = confine_path(
                self.serverapp.root_dir, update.notebook_path, field="body.notebook_path"
            )
        if update.notebook is not None:
            changes["notebook"] = _check_notebook(update.notebook, "body.notebook")
        elif update.resnapshot or (
            update.notebook_path is not None and changes["notebook_path"] != current.notebook_path
        ):
            path = changes.get("notebook_path", current.notebook_path)
            if not path:
                raise ValidationError(
                    "body.resnapshot",
                    True,
                    "needs a notebook_path to snapshot; this deployment was uploaded",
                    "upload the notebook as body.notebook, or give body.notebook_path",
                )
            changes["notebook"] = await self.read_notebook(path, "body.notebook_path")
        return changes

    def conflict(self, exc: DeploymentVersionConflict) -> ApiError:
        """The 409 of a stale edit: the current version and the fields changed since."""
        return ApiError(
            409,
            str(exc),
            [
                {
                    "field": "body.expected_version",
                    "problem": f"is {exc.expected}, the deployment is at version {exc.current}",
                    "current_version": str(exc.current),
                    "changed": ",".join(exc.changed),
                }
            ],
        )

    def drop_auto_scheduled(self, deployment_id: UUID) -> None:
        """Delete the scheduler's future runs of the deployment (it makes new ones)."""
        flt = FlowRunFilter(
            deployment_ids=[deployment_id], state_types=[StateType.SCHEDULED], limit=1000
        )
        for run in self.client.read_flow_runs(flt):
            if (run.idempotency_key or "").startswith(SCHEDULED_KEY_PREFIX):
                self.client.delete_flow_run(run.id)

    async def after_change(self, deployment: Deployment, changes: list[FieldChange]) -> None:
        """Announce a changed deployment; its schedules changed or paused: future runs go."""
        if any(c.field == "schedules" for c in changes) or deployment.paused:
            # Runs created for the old schedules (or while it is paused) must not start.
            await self.call(self.drop_auto_scheduled, deployment.id)
        self.publish({"type": "deployment", "deployment": deployment.model_dump(mode="json")})
        self.nbflow.wake_scheduler()

    def write_deployment(self, deployment: Deployment, status: int = 200) -> None:
        """Answer the deployment, its version as the ETag (send it back as If-Match)."""
        self.set_header("ETag", f'"{deployment.version}"')
        self.write_model(deployment, status=status)


class DeploymentsHandler(_DeploymentHandler):
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
        "or the uploaded notebook; upserts by flow and name (a new version when it changes)",
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
        self.check_kernel(create.kernel_name, "body.kernel_name")
        changes: dict[str, Any] = {}
        if create.notebook_path is not None:
            changes["notebook_path"] = confine_path(
                self.serverapp.root_dir, create.notebook_path, field="body.notebook_path"
            )
        if create.notebook is not None:
            changes["notebook"] = _check_notebook(create.notebook, "body.notebook")
        elif create.notebook_path is not None:
            changes["notebook"] = await self.read_notebook(
                changes["notebook_path"], "body.notebook_path"
            )
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
        # A redeploy changes what it gives (and the snapshot); the rest stays as deployed.
        given = create.model_fields_set | ({"notebook", "notebook_path"} & changes.keys())
        deployment, changed = await self.call(
            self.versions.create,
            create.model_copy(update=changes),
            author=self.author(),
            given=given,
        )
        await self.after_change(deployment, changed or [])
        self.write_deployment(deployment, status=201)


class DeploymentHandler(_DeploymentHandler):
    """``/deployments/{deployment_id}``."""

    @endpoint(
        "read",
        "Read a deployment with its notebook snapshot (its version is the ETag)",
        response=Deployment,
    )
    async def get(self, deployment_id: str) -> None:
        did = self.parse_uuid("deployment_id", deployment_id)
        if self.run_scope is not None:
            run = await self.call(self.client.read_flow_run, self.run_scope)
            if run.deployment_id != did:
                self.require_run_scope(None)
        self.write_deployment(await self.call(self.client.read_deployment, did))

    @endpoint(
        "write",
        "Edit a deployment (a new version): any editable field; send expected_version "
        "(or If-Match) to be refused (409) instead of overwriting a newer version",
        body=DeploymentUpdate,
        response=Deployment,
    )
    async def patch(self, deployment_id: str) -> None:
        did = self.parse_uuid("deployment_id", deployment_id)
        update = self.parse_body(DeploymentUpdate)
        expected = self.expected_version(update)
        changes = await self.changes_of_update(did, update)
        try:
            deployment, changed = await self.call(
                self.versions.update,
                did,
                changes,
                author=self.author(),
                expected_version=expected,
            )
        except DeploymentVersionConflict as exc:
            raise self.conflict(exc) from None
        await self.after_change(deployment, changed)
        self.write_deployment(deployment)

    @endpoint("write", "Delete a deployment and its future scheduled runs", status=204)
    async def delete(self, deployment_id: str) -> None:
        did = self.parse_uuid("deployment_id", deployment_id)
        await self.call(self.client.delete_deployment, did)
        self.write_empty()


class DeploymentChangesHandler(_DeploymentHandler):
    """``/deployments/{deployment_id}/changes``: what an edit would change (a dry run)."""

    @endpoint(
        "read",
        "Dry run of an edit: the fields it would change (field, old, new); stores nothing",
        body=DeploymentUpdate,
        response=DeploymentChanges,
    )
    async def post(self, deployment_id: str) -> None:
        did = self.parse_uuid("deployment_id", deployment_id)
        update = self.parse_body(DeploymentUpdate)
        expected = self.expected_version(update)
        changes = await self.changes_of_update(did, update)
        try:
            current, changed = await self.call(
                self.versions.preview, did, changes, expected_version=expected
            )
        except DeploymentVersionConflict as exc:
            raise self.conflict(exc) from None
        self.write_model(
            DeploymentChanges(deployment_id=did, version=current.version, changes=changed)
        )


def _version_number(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise ValidationError("version", text, "is not a version number", "versions start at 1")
    return number


class DeploymentVersionsHandler(_DeploymentHandler):
    """``/deployments/{deployment_id}/versions``."""

    @endpoint(
        "read",
        "List a deployment's versions, newest first: number, time, author, summary",
        response=DeploymentVersionList,
    )
    async def get(self, deployment_id: str) -> None:
        did = self.parse_uuid("deployment_id", deployment_id)
        items = await self.call(self.versions.versions, did)
        self.write_model(DeploymentVersionList(items=items))


class DeploymentVersionHandler(_DeploymentHandler):
    """``/deployments/{deployment_id}/versions/{version}``."""

    @endpoint(
        "read",
        "Read one version: its definition, notebook snapshot and what it changed",
        response=DeploymentVersionDetail,
    )
    async def get(self, deployment_id: str, version: str) -> None:
        did = self.parse_uuid("deployment_id", deployment_id)
        self.write_model(await self.call(self.versions.version, did, _version_number(version)))


class DeploymentVersionDiffHandler(_DeploymentHandler):
    """``/deployments/{deployment_id}/versions/{version}/diff?against=M``."""

    @endpoint(
        "read",
        "Diff a version against another (default: the one before): changed fields and a "
        "unified diff per changed code cell of the notebook snapshots",
        query=DeploymentVersionQuery,
        response=DeploymentVersionDiff,
    )
    async def get(self, deployment_id: str, version: str) -> None:
        did = self.parse_uuid("deployment_id", deployment_id)
        number = _version_number(version)
        q = self.parse_query(DeploymentVersionQuery)
        fields, cells = await self.call(self.versions.changes, did, number, q.against)
        against = q.against if q.against is not None else number - 1
        self.write_model(
            DeploymentVersionDiff(
                deployment_id=did, version=number, against=against, changes=fields, cells=cells
            )
        )


class RunEnvironmentsHandler(_DeploymentHandler):
    """``/run_environments``: what the deployment dialog's kernel and image pickers offer."""

    @endpoint(
        "read",
        "List the kernelspecs (for kernel_name), the runners and each runner's default image",
        response=RunEnvironments,
    )
    async def get(self) -> None:
        specs = []
        for name, spec in sorted((await ensure_async(self.kernelspecs.get_all_specs())).items()):
            info = spec.get("spec", {})
            specs.append(
                KernelSpecInfo(
                    name=name,
                    display_name=info.get("display_name") or name,
                    language=info.get("language"),
                )
            )
        runners = available_runners()
        self.write_model(
            RunEnvironments(
                kernelspecs=specs,
                default_kernel_name=getattr(
                    self.serverapp.kernel_manager, "default_kernel_name", None
                ),
                runners=runners,
                default_runner=self.nbflow.default_runner,
                images=self._images(runners),
            )
        )

    def _images(self, runners: list[str]) -> dict[str, str]:
        """Return each container runner's image: the server's runner default, else the
        runner's own default."""
        images: dict[str, str] = {}
        defaults = self.nbflow.lifecycle.runner_defaults
        for name in runners:
            try:
                field = get_runner(name).job_variables_model.model_fields.get("image")
            except ValidationError:
                continue  # its extra is not installed: nothing to offer
            if field is None:
                continue
            image = defaults.get(name, {}).get("image") or field.default
            if isinstance(image, str) and image:
                images[name] = image
        return images


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
