"""Request and response bodies of the REST API that are not domain models.

Domain objects cross the API as the models of :mod:`nbflow.schemas`; this module adds the
envelopes (pages, batches) and the partial-update bodies.  Every model forbids unknown
fields so a typo is a 400 naming the field, not a silent no-op.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from nbflow.orchestration.deployment_diff import CellDiff
from nbflow.schemas import (
    Artifact,
    Deployment,
    DeploymentVersion,
    FieldChange,
    Flow,
    FlowRun,
    Log,
    Schedule,
    TaskRun,
)
from nbflow.states import State, StateType

__all__ = [
    "RunToken",
    "ArtifactList",
    "CancelRequest",
    "DeploymentChanges",
    "DeploymentList",
    "DeploymentUpdate",
    "DeploymentVersionDiff",
    "DeploymentVersionList",
    "DeploymentVersionQuery",
    "KernelSpecInfo",
    "RunEnvironments",
    "ErrorBody",
    "FlowList",
    "FlowRunGraph",
    "FlowRunPage",
    "FlowRunUpdate",
    "GraphEdge",
    "LogBatch",
    "LogPageBody",
    "LogQuery",
    "ArtifactQuery",
    "DeploymentQuery",
    "PageQuery",
    "RetryRequest",
    "RunDeploymentRequest",
    "SetStateRequest",
    "StateList",
    "TaskRunBatch",
    "TaskRunList",
    "TaskRunStateItem",
    "TaskRunQuery",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorField(_Body):
    """One problem of a request, located by a dotted field path."""

    field: str
    problem: str


class ErrorBody(_Body):
    """What every error response carries."""

    message: str
    reason: str | None = None
    errors: list[ErrorField] = Field(default_factory=list)


class PageQuery(_Body):
    """Pagination of a listing."""

    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class FlowQuery(PageQuery):
    """Listing flows, optionally the one with a name."""

    name: str | None = None


class DeploymentQuery(PageQuery):
    """Listing deployments, optionally of one flow."""

    flow_id: uuid.UUID | None = None


class TaskRunQuery(_Body):
    """Listing task runs (same fields as ``TaskRunFilter``)."""

    flow_run_ids: list[uuid.UUID] | None = None
    state_types: list[StateType] | None = None
    limit: int = Field(default=1000, ge=1, le=100_000)
    offset: int = Field(default=0, ge=0)


class LogQuery(_Body):
    """Reading a run's logs after a cursor."""

    flow_run_id: uuid.UUID
    cursor: int = Field(default=0, ge=0)
    limit: int = Field(default=1000, ge=1, le=10_000)
    task_run_id: uuid.UUID | None = None


class ArtifactQuery(_Body):
    """Listing artifacts of a run and/or with a key."""

    flow_run_id: uuid.UUID | None = None
    key: str | None = None


class FlowList(_Body):
    """A page of flows."""

    items: list[Flow]


class DeploymentList(_Body):
    """A page of deployments."""

    items: list[Deployment]


class FlowRunPage(_Body):
    """A page of flow runs with the total count matching the filter."""

    items: list[FlowRun]
    total: int
    limit: int
    offset: int


class TaskRunList(_Body):
    """Task runs matching a filter."""

    items: list[TaskRun]


class StateList(_Body):
    """A state history, oldest first."""

    items: list[State]


class RunToken(_Body):
    """A token for one run's process: it may report on that run only."""

    flow_run_id: uuid.UUID
    token: str


class ArtifactList(_Body):
    """Artifacts, oldest first."""

    items: list[Artifact]


class DeploymentUpdate(_Body):
    """Fields of a deployment to change (``{"paused": true}`` pauses it).

    Every change is a new version.  Send ``expected_version`` (or ``If-Match``) with the
    version the edit was made from: a deployment changed since answers 409 instead of
    being overwritten.
    """

    name: str | None = Field(default=None, min_length=1, max_length=200)
    runner: str | None = None
    job_variables: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None
    schedules: list[Schedule] | None = None
    paused: bool | None = None
    concurrency_limit: int | None = Field(default=None, ge=1)
    description: str | None = None
    tags: list[str] | None = None
    #: ``snapshot`` (run the stored notebook) or ``file`` (the file at run time).
    run_mode: Literal["snapshot", "file"] | None = None
    #: The kernelspec of subprocess runs; null: the notebook's own.
    kernel_name: str | None = Field(default=None, min_length=1, max_length=200)
    #: A new path under the server root; the server snapshots the file there.
    notebook_path: str | None = None
    #: A new snapshot (nbformat JSON), uploaded.
    notebook: dict[str, Any] | None = None
    #: Take a new snapshot of the file at notebook_path (the current or the new one).
    resnapshot: bool = False
    #: The version the edit was made from (the deployment's ``version`` when it was read).
    expected_version: int | None = Field(default=None, ge=0)


class DeploymentChanges(_Body):
    """What an update would change (a dry run): the current version and each field."""

    deployment_id: uuid.UUID
    version: int
    changes: list[FieldChange]


class DeploymentVersionList(_Body):
    """A deployment's versions, newest first."""

    items: list[DeploymentVersion]


class DeploymentVersionQuery(_Body):
    """Which version to compare with (default: the one before)."""

    against: int | None = Field(default=None, ge=1)


class DeploymentVersionDiff(_Body):
    """What differs from version ``against`` to ``version``: fields and code cells."""

    deployment_id: uuid.UUID
    version: int
    against: int
    changes: list[FieldChange]
    #: One unified diff per code cell that changed, was added or removed.
    cells: list[CellDiff]


class KernelSpecInfo(_Body):
    """A kernelspec the server can start (for a deployment's ``kernel_name``)."""

    name: str
    display_name: str
    language: str | None = None


class RunEnvironments(_Body):
    """What a deployment can run with: kernelspecs, runners and their default images."""

    kernelspecs: list[KernelSpecInfo]
    default_kernel_name: str | None = None
    runners: list[str]
    default_runner: str
    #: Runner name → the image its runs use unless ``job_variables.image`` says otherwise.
    images: dict[str, str]


class RunDeploymentRequest(_Body):
    """Run a deployment now: parameters and job variables override the deployment's."""

    parameters: dict[str, Any] = Field(default_factory=dict)
    job_variables: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None
    tags: list[str] = Field(default_factory=list)
    #: When to start (default: now).
    scheduled_time: datetime | None = None
    idempotency_key: str | None = None


class CancelRequest(_Body):
    """Cancel a flow run (the body is optional)."""

    #: Why: recorded as the message of the Cancelled or Cancelling state.
    message: str | None = Field(default=None, max_length=2000)


class RetryRequest(_Body):
    """Retry a finished flow run as a new linked run."""

    #: Parameters to change; the others stay those of the retried run.
    parameters: dict[str, Any] = Field(default_factory=dict)
    #: A repair: restore the task cells the run completed, execute from its failed cell.
    from_failed: StrictBool = False


class FlowRunUpdate(_Body):
    """Non-state fields of a flow run to change."""

    name: str | None = None
    tags: list[str] | None = None
    job_variables: dict[str, Any] | None = None
    infrastructure_id: str | None = None
    output_path: str | None = None


class SetStateRequest(_Body):
    """Propose a state for a flow run through the orchestration gate."""

    state: State
    force: bool = False


class TaskRunStateItem(_Body):
    """One state of a task run in a batch."""

    task_run_id: uuid.UUID
    state: State


class TaskRunBatch(_Body):
    """Task-run snapshots and state history to ingest in one batch."""

    task_runs: list[TaskRun] = Field(default_factory=list, max_length=10_000)
    states: list[TaskRunStateItem] = Field(default_factory=list, max_length=10_000)


class LogBatch(_Body):
    """Log records to append in one batch."""

    logs: list[Log] = Field(max_length=10_000)


class LogPageBody(_Body):
    """A page of logs and the cursor for the next page."""

    logs: list[Log]
    cursor: int


class GraphEdge(_Body):
    """``upstream`` had to finish before ``downstream`` ran."""

    upstream: uuid.UUID
    downstream: uuid.UUID


class FlowRunGraph(_Body):
    """The task runs of a flow run and their dependency edges."""

    flow_run_id: uuid.UUID
    nodes: list[TaskRun]
    edges: list[GraphEdge]


class Event(_Body):
    """A message of the event stream."""

    type: Literal["flow_run_state", "task_run_state", "deployment"]
    flow_run_id: uuid.UUID | None = None
    flow_run: FlowRun | None = None
    task_run: TaskRun | None = None
    deployment: Deployment | None = None
    state: State | None = None
