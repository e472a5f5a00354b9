"""The client interface every front end and runner talks through.

Two implementations: :class:`nbflow.client.embedded.EmbeddedClient` (the store in this
process) and the HTTP client of the server extension.  Methods are synchronous and
thread-safe; task runs and logs are written in batches (the engine's recorder ships them
from a background thread), flow-run states go through the orchestration gate one by one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

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

__all__ = ["Client", "LogPage"]


@dataclass(frozen=True)
class LogPage:
    """A page of logs and the cursor to pass for the next page."""

    logs: list[Log]
    cursor: int


class Client(ABC):
    """Create, read and orchestrate flows, deployments, runs, task runs, logs and artifacts."""

    # -- flows ---------------------------------------------------------------------------
    @abstractmethod
    def create_flow(self, flow: Flow) -> Flow:
        """Register ``flow`` by name, or update the registered one; return the stored flow."""

    @abstractmethod
    def read_flow(self, flow_id: UUID) -> Flow:
        """Return the flow with this id (``NotFound`` if none)."""

    @abstractmethod
    def read_flow_by_name(self, name: str) -> Flow:
        """Return the flow with this name (``NotFound`` if none)."""

    @abstractmethod
    def read_flows(self, *, limit: int = 100, offset: int = 0) -> list[Flow]:
        """Return flows ordered by name."""

    # -- deployments ---------------------------------------------------------------------
    @abstractmethod
    def create_deployment(self, deployment: DeploymentCreate) -> Deployment:
        """Create the deployment, or update the one with the same flow and name."""

    @abstractmethod
    def read_deployment(self, deployment_id: UUID) -> Deployment:
        """Return the deployment with this id (``NotFound`` if none)."""

    @abstractmethod
    def read_deployments(
        self, *, flow_id: UUID | None = None, limit: int = 100, offset: int = 0
    ) -> list[Deployment]:
        """Return deployments, optionally of one flow."""

    @abstractmethod
    def update_deployment(self, deployment_id: UUID, **changes: Any) -> Deployment:
        """Change fields of a deployment (paused, schedules, parameters, ...)."""

    @abstractmethod
    def delete_deployment(self, deployment_id: UUID) -> None:
        """Delete a deployment and its future scheduled runs."""

    # -- flow runs -----------------------------------------------------------------------
    @abstractmethod
    def create_flow_run(self, flow_run: FlowRunCreate) -> FlowRun:
        """Create a flow run; with an idempotency key already used, return the existing run."""

    @abstractmethod
    def read_flow_run(self, flow_run_id: UUID) -> FlowRun:
        """Return the flow run with this id (``FlowRunNotFound`` if none)."""

    @abstractmethod
    def read_flow_runs(self, flow_run_filter: FlowRunFilter | None = None) -> list[FlowRun]:
        """Return flow runs matching the filter (newest first by default)."""

    @abstractmethod
    def count_flow_runs(self, flow_run_filter: FlowRunFilter | None = None) -> int:
        """Count flow runs matching the filter (ignoring limit and offset)."""

    @abstractmethod
    def set_flow_run_state(
        self, flow_run_id: UUID, state: State, *, force: bool = False
    ) -> OrchestrationResult:
        """Propose ``state`` through the orchestration gate; return its answer."""

    @abstractmethod
    def cancel_flow_run(
        self, flow_run_id: UUID, *, message: str | None = None
    ) -> OrchestrationResult:
        """Cancel a run: Cancelled if it has not started, else Cancelling for its owner to stop.

        Raises :class:`~nbflow.exceptions.TransitionRejected` for a finished run.
        """

    @abstractmethod
    def retry_flow_run(
        self,
        flow_run_id: UUID,
        *,
        parameters: dict[str, Any] | None = None,
        from_failed: bool = False,
    ) -> FlowRun:
        """Create a new Scheduled run retrying a finished batch run (``retry_of`` set).

        Same flow, deployment, runner, job variables and notebook; the same parameters,
        each overridden by ``parameters``.  ``from_failed``: a repair that restores the
        task cells the old run completed (:mod:`nbflow.orchestration.repair`).
        """

    @abstractmethod
    def claim_flow_runs(
        self,
        runners: Sequence[str],
        *,
        claimer: str,
        limit: int | None = None,
        wait_seconds: float = 0.0,
    ) -> list[ClaimedRun]:
        """Claim due batch runs of ``runners`` that fit every concurrency limit (now Pending).

        Each comes with its final job variables (runner defaults < deployment < run) and,
        where the store side mints them, the run's own API token.  At most ``limit`` runs.
        ``wait_seconds``: when none is due, wait up to that long for one (a long poll, over
        the API; the embedded store answers at once).
        """

    @abstractmethod
    def read_concurrency_limits(self) -> list[ConcurrencyLimit]:
        """Return the flow and tag concurrency limits (``flow:<name>``, ``tag:<tag>``), by key."""

    @abstractmethod
    def set_concurrency_limit(self, key: str, limit: int) -> ConcurrencyLimit:
        """Create or change the limit of ``flow:<name>`` or ``tag:<tag>``."""

    @abstractmethod
    def delete_concurrency_limit(self, key: str) -> None:
        """Remove a concurrency limit (``NotFound`` if there is none)."""

    @abstractmethod
    def read_flow_run_states(self, flow_run_id: UUID) -> list[State]:
        """Return the run's state history, oldest first."""

    @abstractmethod
    def update_flow_run(self, flow_run_id: UUID, **changes: Any) -> FlowRun:
        """Set non-state fields: infrastructure_id, output_path, name, tags, job_variables."""

    @abstractmethod
    def heartbeat(self, flow_run_id: UUID) -> None:
        """Record that the process executing the run is alive."""

    @abstractmethod
    def delete_flow_run(self, flow_run_id: UUID) -> None:
        """Delete a flow run with its task runs, logs and artifacts."""

    # -- task runs -----------------------------------------------------------------------
    @abstractmethod
    def write_task_runs(
        self, task_runs: Sequence[TaskRun], states: Sequence[tuple[UUID, State]] = ()
    ) -> None:
        """Upsert task runs (latest snapshot wins) and append their state history, in one batch."""

    @abstractmethod
    def read_task_runs(self, task_run_filter: TaskRunFilter | None = None) -> list[TaskRun]:
        """Return task runs matching the filter, oldest first."""

    @abstractmethod
    def read_task_run_states(self, task_run_id: UUID) -> list[State]:
        """Return a task run's state history, oldest first."""

    # -- logs and artifacts --------------------------------------------------------------
    @abstractmethod
    def write_logs(self, logs: Sequence[Log]) -> None:
        """Append a batch of log records."""

    @abstractmethod
    def read_logs(
        self,
        flow_run_id: UUID,
        *,
        cursor: int = 0,
        limit: int = 1000,
        task_run_id: UUID | None = None,
    ) -> LogPage:
        """Return the run's logs after ``cursor`` (0: from the start), oldest first."""

    @abstractmethod
    def create_artifact(self, artifact: Artifact) -> Artifact:
        """Store an artifact (an output notebook, a result reference)."""

    @abstractmethod
    def read_artifacts(
        self, *, flow_run_id: UUID | None = None, key: str | None = None
    ) -> list[Artifact]:
        """Return artifacts of a run and/or with a key, oldest first."""

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Release connections; the client must not be used afterwards."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
