"""The embedded client: the :class:`~nbflow.client.base.Client` interface over a local store.

It is the run lifecycle (:class:`~nbflow.orchestration.lifecycle.FlowRunLifecycle`) in this
process: every flow-run write (create, state, cancel, retry, update) goes through it, reads
and the other objects go to its store.  The server's handlers and services use one too.

This is what a kernel or the CLI uses when no server is configured: the store lives in
this process (SQLite under ``NBFLOW_HOME`` by default, or any SQLAlchemy URL).  It is
thread-safe (each call takes a pooled connection for one transaction) and process-safe
(SQLite's locks, PostgreSQL's row locks), so the engine's recorder thread, the main
thread and other processes may all use the same database at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy.engine import URL

from nbflow.client.base import Client, LogPage
from nbflow.orchestration.lifecycle import FlowRunLifecycle
from nbflow.orchestration.store import Store
from nbflow.schemas import (
    Artifact,
    ClaimedRun,
    ConcurrencyLimit,
    Deployment,
    DeploymentCreate,
    Flow,
    FlowRun,
    FlowRunCreate,
    FlowRunFilter,
    Log,
    OrchestrationResult,
    TaskRun,
    TaskRunFilter,
)
from nbflow.states import State

__all__ = ["EmbeddedClient"]


class EmbeddedClient(Client):
    """Talk to a run lifecycle (and its :class:`~nbflow.orchestration.store.Store`) in this process."""

    def __init__(self, lifecycle: FlowRunLifecycle | Store) -> None:
        """Use ``lifecycle`` (a bare store gets a lifecycle with the default settings)."""
        if isinstance(lifecycle, Store):
            lifecycle = FlowRunLifecycle(lifecycle)
        self.lifecycle = lifecycle
        self.store = lifecycle.store

    @classmethod
    def from_url(cls, url: str | URL, **engine_kwargs: Any) -> EmbeddedClient:
        """Open the store at a SQLAlchemy URL (migrating it on first use)."""
        return cls(FlowRunLifecycle(Store.from_url(url, **engine_kwargs)))

    # -- flows ---------------------------------------------------------------------------
    def create_flow(self, flow: Flow) -> Flow:
        """Register ``flow`` by name, or update the registered one; return the stored flow."""
        return self.store.create_flow(flow)

    def read_flow(self, flow_id: UUID) -> Flow:
        """Return the flow with this id (``NotFound`` if none)."""
        return self.store.read_flow(flow_id)

    def read_flow_by_name(self, name: str) -> Flow:
        """Return the flow with this name (``NotFound`` if none)."""
        return self.store.read_flow_by_name(name)

    def read_flows(self, *, limit: int = 100, offset: int = 0) -> list[Flow]:
        """Return flows ordered by name."""
        return self.store.read_flows(limit=limit, offset=offset)

    # -- deployments ---------------------------------------------------------------------
    def create_deployment(self, deployment: DeploymentCreate) -> Deployment:
        """Create the deployment, or update the one with the same flow and name."""
        return self.store.create_deployment(deployment)

    def read_deployment(self, deployment_id: UUID) -> Deployment:
        """Return the deployment with this id (``NotFound`` if none)."""
        return self.store.read_deployment(deployment_id)

    def read_deployments(
        self, *, flow_id: UUID | None = None, limit: int = 100, offset: int = 0
    ) -> list[Deployment]:
        """Return deployments, optionally of one flow."""
        return self.store.read_deployments(flow_id=flow_id, limit=limit, offset=offset)

    def update_deployment(self, deployment_id: UUID, **changes: Any) -> Deployment:
        """Change fields of a deployment (paused, schedules, parameters, ...)."""
        return self.store.update_deployment(deployment_id, **changes)

    def delete_deployment(self, deployment_id: UUID) -> None:
        """Delete a deployment and its future scheduled runs."""
        self.store.delete_deployment(deployment_id)

    # -- flow runs -----------------------------------------------------------------------
    def create_flow_run(self, flow_run: FlowRunCreate) -> FlowRun:
        """Create a flow run; with an idempotency key already used, return the existing run."""
        return self.lifecycle.create_flow_run(flow_run)

    def read_flow_run(self, flow_run_id: UUID) -> FlowRun:
        """Return the flow run with this id (``FlowRunNotFound`` if none)."""
        return self.store.read_flow_run(flow_run_id)

    def read_flow_runs(self, flow_run_filter: FlowRunFilter | None = None) -> list[FlowRun]:
        """Return flow runs matching the filter (newest first by default)."""
        return self.store.read_flow_runs(flow_run_filter)

    def count_flow_runs(self, flow_run_filter: FlowRunFilter | None = None) -> int:
        """Count flow runs matching the filter (ignoring limit and offset)."""
        return self.store.count_flow_runs(flow_run_filter)

    def set_flow_run_state(
        self, flow_run_id: UUID, state: State, *, force: bool = False
    ) -> OrchestrationResult:
        """Propose ``state`` through the orchestration gate; return its answer."""
        return self.lifecycle.set_flow_run_state(flow_run_id, state, force=force)

    def cancel_flow_run(
        self, flow_run_id: UUID, *, message: str | None = None
    ) -> OrchestrationResult:
        """Cancel a run: Cancelled if it has not started, else Cancelling for its owner to stop."""
        return self.lifecycle.cancel_flow_run(flow_run_id, message=message)

    def retry_flow_run(
        self,
        flow_run_id: UUID,
        *,
        parameters: dict[str, Any] | None = None,
        from_failed: bool = False,
    ) -> FlowRun:
        """Create a new Scheduled run retrying a finished batch run (``retry_of`` set)."""
        return self.lifecycle.retry_flow_run(
            flow_run_id, parameters=parameters, from_failed=from_failed
        )

    def claim_flow_runs(
        self,
        runners: Sequence[str],
        *,
        claimer: str,
        limit: int | None = None,
        wait_seconds: float = 0.0,
    ) -> list[ClaimedRun]:
        """Claim due batch runs of ``runners`` that fit every concurrency limit (now Pending).

        ``wait_seconds`` is ignored: the in-process dispatcher is woken by the store.
        """
        return self.lifecycle.claim_flow_runs(runners, claimer=claimer, limit=limit)

    def read_concurrency_limits(self) -> list[ConcurrencyLimit]:
        """Return the flow and tag concurrency limits, by key."""
        return self.store.read_concurrency_limits()

    def set_concurrency_limit(self, key: str, limit: int) -> ConcurrencyLimit:
        """Create or change the limit of ``flow:<name>`` or ``tag:<tag>``."""
        return self.store.set_concurrency_limit(key, limit)

    def delete_concurrency_limit(self, key: str) -> None:
        """Remove a concurrency limit (``NotFound`` if there is none)."""
        self.store.delete_concurrency_limit(key)

    def read_flow_run_states(self, flow_run_id: UUID) -> list[State]:
        """Return the run's state history, oldest first."""
        return self.store.read_flow_run_states(flow_run_id)

    def update_flow_run(self, flow_run_id: UUID, **changes: Any) -> FlowRun:
        """Set non-state fields: infrastructure_id, output_path, name, tags, job_variables."""
        return self.lifecycle.update_flow_run(flow_run_id, **changes)

    def heartbeat(self, flow_run_id: UUID) -> None:
        """Record that the process executing the run is alive."""
        self.lifecycle.heartbeat(flow_run_id)

    def delete_flow_run(self, flow_run_id: UUID) -> None:
        """Delete a flow run with its task runs, logs and artifacts."""
        self.lifecycle.delete_flow_run(flow_run_id)

    # -- task runs -----------------------------------------------------------------------
    def write_task_runs(
        self, task_runs: Sequence[TaskRun], states: Sequence[tuple[UUID, State]] = ()
    ) -> None:
        """Upsert task runs (latest snapshot wins) and append their state history, in one batch."""
        self.store.write_task_runs(task_runs, states)

    def read_task_runs(self, task_run_filter: TaskRunFilter | None = None) -> list[TaskRun]:
        """Return task runs matching the filter, oldest first."""
        return self.store.read_task_runs(task_run_filter)

    def read_task_run_states(self, task_run_id: UUID) -> list[State]:
        """Return a task run's state history, oldest first."""
        return self.store.read_task_run_states(task_run_id)

    # -- logs and artifacts --------------------------------------------------------------
    def write_logs(self, logs: Sequence[Log]) -> None:
        """Append a batch of log records."""
        self.store.write_logs(logs)

    def read_logs(
        self,
        flow_run_id: UUID,
        *,
        cursor: int = 0,
        limit: int = 1000,
        task_run_id: UUID | None = None,
    ) -> LogPage:
        """Return the run's logs after ``cursor`` (0: from the start), oldest first."""
        found, next_cursor = self.store.read_logs(
            flow_run_id, cursor=cursor, limit=limit, task_run_id=task_run_id
        )
        return LogPage(logs=found, cursor=next_cursor)

    def create_artifact(self, artifact: Artifact) -> Artifact:
        """Store an artifact (an output notebook, a result reference)."""
        return self.store.create_artifact(artifact)

    def read_artifacts(
        self, *, flow_run_id: UUID | None = None, key: str | None = None
    ) -> list[Artifact]:
        """Return artifacts of a run and/or with a key, oldest first."""
        return self.store.read_artifacts(flow_run_id=flow_run_id, key=key)

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Release the store's connections."""
        self.lifecycle.close()
