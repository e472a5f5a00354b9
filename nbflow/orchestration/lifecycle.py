"""The flow-run lifecycle: the one owner of creating, cancelling, retrying and closing out runs.

Every front end reaches a run's lifecycle through :class:`FlowRunLifecycle`: the embedded
client *is* it (``EmbeddedClient(lifecycle)``), the server's handlers, scheduler and
dispatcher call it through the server's embedded client, and the HTTP client mirrors it
over the API.  The store is its persistence; nothing else writes runs.

- **create** (ad hoc, from a deployment, scheduled with an idempotency key, retried): the
  run's parameters are the deployment's overridden by the run's, checked together with the
  flow's defaults by the one validator (:func:`nbflow.parameters.validate_parameters`), so
  a bad run is refused before it exists, naming the parameter.  A batch run without a
  runner gets the deployment's, else the default runner.  The run stores its *own* job
  variables; the full configuration (runner defaults < deployment < run) is merged when
  the run is claimed.
- **propose a state**: the store's gated transaction (:mod:`nbflow.orchestration.policy`).
- **cancel** (:meth:`FlowRunLifecycle.cancel_flow_run`): a run that has not started is
  Cancelled at once; a started one becomes Cancelling for its owner (dispatcher, worker,
  executor, kernel) to stop; a finished one is refused.  Decided under the run's lock.
  A pipeline's unfinished child runs (``parent_flow_run_id``) are cancelled with it.
- **retry** (:meth:`FlowRunLifecycle.retry_flow_run`): a finished run never reopens; a
  retry is a new run with ``retry_of`` set and the same flow, deployment, runner, job
  variables and notebook (parameters the same unless overridden); ``from_failed`` makes
  it a repair that restores the task cells the old run completed (:mod:`.repair`).
- **start a child** (:meth:`FlowRunLifecycle.create_child_run`): a running pipeline run
  asks for a Scheduled child run of a notebook; it runs on the parent's runner with the
  parent's job variables (unless a user chose others) and the dispatcher launches it.
- **close out**: entering a terminal state ends the run's open task runs in the same
  transaction (:mod:`nbflow.orchestration.store.flow_runs`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from nbflow.exceptions import NotFound, TransitionRejected, ValidationError
from nbflow.orchestration.job_variables import merge_job_variables, run_job_variables
from nbflow.orchestration.repair import repair_state, task_runs_of
from nbflow.orchestration.store import Store
from nbflow.parameters import validate_parameters
from nbflow.schemas import (
    ClaimedRun,
    Deployment,
    Flow,
    FlowRun,
    FlowRunCreate,
    FlowRunFilter,
    OrchestrationResult,
    SetStateStatus,
)
from nbflow.states import Cancelled, Cancelling, Scheduled, State, StateType

__all__ = ["AUTO_SCHEDULED_TAG", "FlowRunLifecycle", "cancel_state"]

#: Tag of the runs the scheduler creates from a deployment's schedules.
AUTO_SCHEDULED_TAG = "auto-scheduled"


def cancel_state(run: FlowRun, message: str | None = None) -> State | OrchestrationResult:
    """Return what cancelling ``run`` proposes: Cancelled, Cancelling, or the answer itself.

    Not started (Scheduled, Late, AwaitingRetry, Paused, or Pending with no infrastructure
    yet) → Cancelled: nothing runs that must be stopped.  Started (Pending with
    infrastructure, Running) → Cancelling: the run's owner stops its process, which then
    proposes Cancelled.  Already Cancelling → the current state, unchanged.  Finished →
    :class:`TransitionRejected`.
    """
    current = run.state
    if current is None:
        return Cancelled(message=message or "cancelled before it started")
    if current.is_terminal:
        raise TransitionRejected(
            run.id,
            "Cancelled",
            current.name,
            f"the run already finished ({current.name}); there is nothing to cancel",
        )
    if current.type is StateType.CANCELLING:
        return OrchestrationResult(
            status=SetStateStatus.ACCEPT, state=current, reason="the run is already cancelling"
        )
    not_started = current.type in (StateType.SCHEDULED, StateType.PAUSED) or (
        current.type is StateType.PENDING and run.infrastructure_id is None
    )
    if not_started:
        return Cancelled(message=message or "cancelled before it started")
    return Cancelling(message=message or "cancel requested")


class FlowRunLifecycle:
    """Create, orchestrate, cancel, retry and close out flow runs over one store."""

    def __init__(
        self,
        store: Store,
        *,
        default_runner: str = "subprocess",
        runner_defaults: Mapping[str, Mapping[str, Any]] | None = None,
        global_concurrency_limit: int | None = None,
        token_minter: Callable[[UUID], str] | None = None,
    ) -> None:
        self.store = store
        #: Runner of a batch run (or deployment) that names none.
        self.default_runner = default_runner
        #: Job variables per runner, the lowest layer of a claimed run's configuration.
        self.runner_defaults: dict[str, dict[str, Any]] = {
            name: dict(values) for name, values in (runner_defaults or {}).items()
        }
        #: Most batch runs claimed at once across every deployment (None: no limit).
        self.global_concurrency_limit = global_concurrency_limit
        self.token_minter = token_minter

    # -- creating ------------------------------------------------------------------------
    def create_flow_run(self, create: FlowRunCreate, *, field: str = "parameters") -> FlowRun:
        """Create a run (or return the one with its idempotency key), refusing bad parameters.

        A run of a deployment takes the deployment's parameters (the run's override them),
        runner and notebook path.  :class:`~nbflow.exceptions.ParameterError` names the
        parameter (``<field>.<name>``; the API passes ``body.parameters``), the value and
        the expected type.
        """
        return self._create(create, field=field)

    def _create(
        self, create: FlowRunCreate, *, field: str, deployment: Deployment | None = None
    ) -> FlowRun:
        flow = self.store.read_flow(create.flow_id)
        parameters = dict(create.parameters)
        runner, notebook_path = create.runner, create.notebook_path
        if create.deployment_id is not None:
            if deployment is None or deployment.id != create.deployment_id:
                deployment = self.store.read_deployment(create.deployment_id)
            if deployment.flow_id != create.flow_id:
                raise ValidationError(
                    "deployment_id",
                    create.deployment_id,
                    f"is a deployment of another flow than {flow.name!r}",
                    "give the deployment's own flow_id, or no deployment_id",
                )
            parameters = {**deployment.parameters, **parameters}
            runner = runner or deployment.runner
            notebook_path = notebook_path or deployment.notebook_path
        if create.mode == "batch" and runner is None:
            runner = self.default_runner
        parameters = self._validate(flow, parameters, field=field)
        return self.store.create_flow_run(
            create.model_copy(
                update={
                    "parameters": parameters,
                    "runner": runner,
                    "notebook_path": notebook_path,
                }
            )
        )

    def run_deployment(
        self,
        deployment: Deployment,
        *,
        parameters: Mapping[str, Any] | None = None,
        scheduled_time: datetime | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        job_variables: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        message: str | None = None,
        field: str = "parameters",
    ) -> FlowRun:
        """Create a Scheduled batch run of ``deployment`` (run now, or by its schedule).

        ``job_variables`` are the run's own (the deployment's and the runner defaults are
        merged in when it is claimed).
        """
        return self._create(
            FlowRunCreate(
                flow_id=deployment.flow_id,
                deployment_id=deployment.id,
                name=name,
                parameters=dict(parameters or {}),
                state=Scheduled(scheduled_time=scheduled_time, message=message),
                tags=[*deployment.tags, *(tags or [])],
                job_variables=dict(job_variables or {}),
                idempotency_key=idempotency_key,
                mode="batch",
            ),
            field=field,
            deployment=deployment,
        )

    def _validate(self, flow: Flow, parameters: dict[str, Any], *, field: str) -> dict[str, Any]:
        return validate_parameters(
            flow.parameters_schema, parameters, field=field, flow_name=flow.name
        )

    def update_flow_run(self, flow_run_id: UUID, **changes: Any) -> FlowRun:
        """Set non-state fields of a run; changed parameters pass the validator first."""
        if "parameters" in changes:
            run = self.store.read_flow_run(flow_run_id)
            flow = self.store.read_flow(run.flow_id)
            changes["parameters"] = self._validate(
                flow, dict(changes["parameters"] or {}), field="parameters"
            )
        return self.store.update_flow_run(flow_run_id, **changes)

    def heartbeat(self, flow_run_id: UUID) -> None:
        """Record that the process executing the run is alive."""
        self.store.heartbeat(flow_run_id)

    def delete_flow_run(self, flow_run_id: UUID) -> None:
        """Delete a run with its states, task runs, logs and artifacts."""
        self.store.delete_flow_run(flow_run_id)

    # -- states --------------------------------------------------------------------------
    def set_flow_run_state(
        self, flow_run_id: UUID, state: State, *, force: bool = False
    ) -> OrchestrationResult:
        """Propose ``state`` through the orchestration gate; return its answer.

        ``force`` bypasses the policy: for users and administrators only, never run tokens.
        """
        return self.store.set_flow_run_state(flow_run_id, state, force=force)

    def cancel_flow_run(
        self, flow_run_id: UUID, *, message: str | None = None
    ) -> OrchestrationResult:
        """Cancel a run: Cancelled if it has not started, else Cancelling (see :func:`cancel_state`).

        Raises :class:`~nbflow.exceptions.TransitionRejected` for a finished run, or when
        the gate refuses (the run changed meanwhile).
        """
        result = self.store.propose_flow_run_state(
            flow_run_id, lambda run: cancel_state(run, message)
        )
        if result.status is not SetStateStatus.ACCEPT:
            current = result.state.name if result.state is not None else None
            raise TransitionRejected(
                flow_run_id,
                "Cancelled",
                current,
                result.reason or f"the gate answered {result.status.value}",
            )
        self._cancel_children(flow_run_id)
        return result

    def _cancel_children(self, flow_run_id: UUID) -> None:
        """Cancel a pipeline's unfinished child runs (``run_notebook``) with their parent.

        Each child's owner (the calling flow, which launched it) stops its process.
        """
        children = self.store.read_flow_runs(
            FlowRunFilter(parent_flow_run_ids=[flow_run_id], limit=1000)
        )
        for child in children:
            if child.state is not None and child.state.is_terminal:
                continue
            try:
                self.cancel_flow_run(
                    child.id, message=f"its parent run {flow_run_id} was cancelled"
                )
            except TransitionRejected:
                pass  # it finished meanwhile

    # -- retrying ------------------------------------------------------------------------
    def retry_flow_run(
        self,
        flow_run_id: UUID,
        *,
        parameters: Mapping[str, Any] | None = None,
        from_failed: bool = False,
        field: str = "parameters",
    ) -> FlowRun:
        """Create a new Scheduled run that retries a finished batch run (``retry_of`` set).

        Same name, flow, deployment, runner, job variables, notebook and tags; the same
        parameters, each overridden by ``parameters``.  The old run stays as it ended.
        ``from_failed`` makes it a repair: the new run's first state carries the plan
        (:func:`nbflow.orchestration.repair.repair_plan`) with which its kernel restores
        the task cells that completed in the old run instead of running them again.
        """
        old = self.store.read_flow_run(flow_run_id)
        if old.state is None or not old.state.is_terminal:
            raise TransitionRejected(
                old.id,
                "retry",
                old.state.name if old.state else None,
                "only a finished run can be retried; cancel it first or wait for it to end",
            )
        if old.mode != "batch":
            raise ValidationError(
                "mode",
                old.mode,
                "cannot be retried by the server: no runner executes "
                f"{old.mode} runs (they ran in a kernel or a Python process)",
                "run the notebook or the flow again where it ran",
            )
        return self.create_flow_run(
            FlowRunCreate(
                flow_id=old.flow_id,
                deployment_id=old.deployment_id,
                name=old.name,
                parameters={**old.parameters, **(parameters or {})},
                state=(
                    repair_state(
                        old,
                        self.store.read_task_runs(task_runs_of(old)),
                        # The same prefix as the parameters' field (``body.`` through the API).
                        field=field.rpartition("parameters")[0] + "from_failed",
                    )
                    if from_failed
                    else Scheduled(message="a retry (retry_of names the run it retries)")
                ),
                tags=[t for t in old.tags if t != AUTO_SCHEDULED_TAG],
                runner=old.runner,
                job_variables=dict(old.job_variables),
                notebook_path=old.notebook_path,
                mode=old.mode,
                retry_of=old.id,
                parent_flow_run_id=old.parent_flow_run_id,
                parent_task_run_id=old.parent_task_run_id,
            ),
            field=field,
        )

    # -- pipelines -----------------------------------------------------------------------
    def create_child_run(
        self,
        parent_flow_run_id: UUID,
        flow: Flow,
        *,
        notebook_path: str,
        parameters: Mapping[str, Any] | None = None,
        parent_task_run_id: UUID | None = None,
        runner: str | None = None,
        job_variables: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        field: str = "parameters",
    ) -> FlowRun:
        """Create a Scheduled child run of ``flow``'s notebook for a running parent run.

        This is how a pipeline dispatched by a server starts a child (``run_notebook`` in
        a run holding a run token): the dispatcher launches the child like any run, so
        the parent's process needs no rights beyond asking.  The child runs on the
        parent's runner and with the parent's job variables (its deployment's and its
        own), unless ``runner``/``job_variables`` are given (a user's request), in the
        notebook's directory.  ``flow`` is registered (or updated) by name.
        """
        parent = self.store.read_flow_run(parent_flow_run_id)
        if parent.state is None or parent.state.type is not StateType.RUNNING:
            raise TransitionRejected(
                parent.id,
                "start a child run",
                parent.state.name if parent.state else None,
                "only a Running flow run starts child runs",
            )
        if parent_task_run_id is not None:
            owner = self.store.read_task_run_owners([parent_task_run_id]).get(parent_task_run_id)
            if owner is not None and owner != parent.id:
                raise ValidationError(
                    "parent_task_run_id",
                    parent_task_run_id,
                    f"is a task run of flow run {owner}, not of the parent {parent.id}",
                    "name the parent's calling task run, or none",
                )
        if job_variables is None:
            inherited: dict[str, Any] = {}
            if parent.deployment_id is not None:
                inherited = dict(self.store.read_deployment(parent.deployment_id).job_variables)
            variables = merge_job_variables(inherited, parent.job_variables)
        else:
            variables = dict(job_variables)
        folder = notebook_path.rpartition("/")[0]
        if folder:
            variables["working_dir"] = folder
        try:
            stored = self.store.read_flow_by_name(flow.name)
        except NotFound:
            stored = None
        if stored is None or stored.parameters_schema != flow.parameters_schema:
            stored = self.store.create_flow(flow)
        return self._create(
            FlowRunCreate(
                flow_id=stored.id,
                parameters=dict(parameters or {}),
                state=Scheduled(message=f"a child run of flow run {parent.id} (run_notebook)"),
                runner=runner or parent.runner or self.default_runner,
                job_variables=variables,
                notebook_path=notebook_path,
                mode="batch",
                # Scoped to the parent: a key never finds another run's child.
                idempotency_key=f"child:{parent.id}:{idempotency_key}" if idempotency_key else None,
                parent_flow_run_id=parent.id,
                parent_task_run_id=parent_task_run_id,
            ),
            field=field,
        )

    # -- claiming ------------------------------------------------------------------------
    def claim_flow_runs(
        self, runners: Sequence[str], *, claimer: str, limit: int | None = None
    ) -> list[ClaimedRun]:
        """Claim due batch runs of ``runners`` that fit every concurrency limit.

        One store transaction picks and claims them (Pending, ``claimed by <claimer>``;
        see :mod:`nbflow.orchestration.store.claims`).  Each comes with its final job
        variables (runner defaults < deployment < run, ``env`` per variable) and, when
        this lifecycle mints tokens, the run's own API token.
        """
        claims = self.store.claim_flow_runs(
            runners,
            claimer=claimer,
            default_runner=self.default_runner,
            limit=limit,
            global_limit=self.global_concurrency_limit,
        )
        return [
            ClaimedRun(
                flow_run=c.flow_run,
                job_variables=run_job_variables(
                    c.flow_run,
                    runner=c.flow_run.runner or self.default_runner,
                    deployment_job_variables=c.deployment_job_variables,
                    runner_defaults=self.runner_defaults,
                ),
                token=self.mint_run_token(c.flow_run.id),
            )
            for c in claims
        ]

    # -- run tokens ----------------------------------------------------------------------
    def mint_run_token(self, flow_run_id: UUID) -> str | None:
        """Return the API token of the run's own process (None: no server signs tokens)."""
        return self.token_minter(flow_run_id) if self.token_minter is not None else None

    def close(self) -> None:
        """Release the store's connections."""
        self.store.close()
