"""Pydantic wire models: what crosses the client interface, the REST API and the store.

These models carry data only; the behaviour lives in ``orchestration`` and ``engine``.
Every model round-trips through JSON (``model_dump(mode="json")``) unchanged, which is what
lets the HTTP client drop in for the embedded one.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nbflow.states import State, StateType, now

__all__ = [
    "Artifact",
    "ClaimedRun",
    "ConcurrencyLimit",
    "Deployment",
    "DeploymentCreate",
    "DeploymentVersion",
    "DeploymentVersionDetail",
    "FieldChange",
    "Flow",
    "FlowRun",
    "FlowRunCreate",
    "FlowRunFilter",
    "Log",
    "OrchestrationResult",
    "Schedule",
    "SetStateStatus",
    "TaskRun",
    "TaskRunFilter",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class Flow(_Model):
    """A named notebook or ``@flow`` function with typed parameters."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    #: JSON schema of the parameters (``properties`` with types and defaults).
    parameters_schema: dict[str, Any] = Field(default_factory=dict)
    #: Path of the notebook or ``file.py:function`` the flow came from, when known.
    source: str | None = None
    tags: list[str] = Field(default_factory=list)
    created: datetime = Field(default_factory=now)
    updated: datetime = Field(default_factory=now)


class Schedule(_Model):
    """A cron (with timezone) or interval schedule attached to a deployment."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    cron: str | None = None
    interval_seconds: float | None = Field(default=None, gt=0)
    timezone: str = "UTC"
    anchor_date: datetime | None = None
    active: bool = True

    @model_validator(mode="after")
    def _one_kind(self) -> Schedule:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("a schedule needs exactly one of 'cron' or 'interval_seconds'")
        return self


class DeploymentCreate(_Model):
    """What a user gives to deploy a flow."""

    flow_id: uuid.UUID
    name: str = Field(min_length=1, max_length=200)
    runner: str = "subprocess"
    job_variables: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[Schedule] = Field(default_factory=list)
    paused: bool = False
    concurrency_limit: int | None = Field(default=None, ge=1)
    #: Path of the notebook relative to the server root, when deployed from a path.
    notebook_path: str | None = None
    #: The notebook snapshot (nbformat JSON) so runners need no shared filesystem.
    notebook: dict[str, Any] | None = None
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    #: What a run executes: the stored ``snapshot`` or the ``file`` at notebook_path as it
    #: is when the run starts.
    run_mode: Literal["snapshot", "file"] = "snapshot"
    #: The kernelspec of subprocess runs (default: the notebook's own kernelspec).
    kernel_name: str | None = Field(default=None, min_length=1, max_length=200)


class Deployment(DeploymentCreate):
    """A flow plus a notebook snapshot, a runner, job variables, schedules and defaults."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    #: The number of its latest version (every change of the definition is one; 0: none yet).
    version: int = 0
    created: datetime = Field(default_factory=now)
    updated: datetime = Field(default_factory=now)


class FieldChange(_Model):
    """One field of a deployment that an update changes (or changed)."""

    field: str
    old: Any = None
    new: Any = None


class DeploymentVersion(_Model):
    """One recorded version of a deployment's definition: who, when and what changed."""

    deployment_id: uuid.UUID
    version: int
    created: datetime
    #: The Jupyter user who made it, else ``api`` (the REST API) or ``cli`` (no server).
    author: str
    summary: str
    #: sha256 of the notebook snapshot of this version (None: no snapshot).
    notebook_sha256: str | None = None


class DeploymentVersionDetail(DeploymentVersion):
    """A version with its definition (every editable field) and its notebook snapshot."""

    definition: dict[str, Any]
    notebook: dict[str, Any] | None = None
    #: The fields this version changed from the one before it (every field for version 1).
    changes: list[FieldChange] = Field(default_factory=list)


class FlowRunCreate(_Model):
    """What a caller gives to create a flow run; the store fills in the rest."""

    flow_id: uuid.UUID
    name: str | None = None
    deployment_id: uuid.UUID | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    state: State | None = None
    tags: list[str] = Field(default_factory=list)
    runner: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)
    #: Unique per deployment: the scheduler uses ``scheduled:<iso time>`` so runs are never duplicated.
    idempotency_key: str | None = None
    #: Notebook path for an ad-hoc notebook run (deployments carry a snapshot instead).
    notebook_path: str | None = None
    #: ``"interactive"`` for a live-kernel run, ``"batch"`` for ``nbflow execute``, ``"python"``.
    mode: Literal["python", "interactive", "batch"] = "python"
    #: The run this one retries (set by the lifecycle's retry, never by a run's process).
    retry_of: uuid.UUID | None = None
    #: The flow run and task run that started this run as a child.
    parent_flow_run_id: uuid.UUID | None = None
    parent_task_run_id: uuid.UUID | None = None


class FlowRun(_Model):
    """One execution of a flow, with its bookkeeping."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    name: str
    flow_id: uuid.UUID
    flow_name: str | None = None
    deployment_id: uuid.UUID | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    state: State | None = None
    run_count: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    total_run_time: float = 0.0
    expected_start_time: datetime | None = None
    tags: list[str] = Field(default_factory=list)
    runner: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)
    infrastructure_id: str | None = None
    idempotency_key: str | None = None
    notebook_path: str | None = None
    output_path: str | None = None
    mode: Literal["python", "interactive", "batch"] = "python"
    heartbeat: datetime | None = None
    retry_of: uuid.UUID | None = None
    parent_flow_run_id: uuid.UUID | None = None
    parent_task_run_id: uuid.UUID | None = None
    created: datetime = Field(default_factory=now)
    updated: datetime = Field(default_factory=now)

    @property
    def state_type(self) -> StateType | None:
        """The current state's type, or None for a run with no state yet."""
        return self.state.type if self.state else None


class TaskRun(_Model):
    """One execution of a task (a ``@task`` call or a ``%%task`` cell) within a flow run."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    flow_run_id: uuid.UUID | None
    name: str
    task_key: str
    dynamic_key: int = 0
    state: State | None = None
    run_count: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    total_run_time: float = 0.0
    cache_key: str | None = None
    cache_expiration: datetime | None = None
    #: Task run ids this run waited for (the DAG).
    upstream: list[uuid.UUID] = Field(default_factory=list)
    #: Cell-level names read and written (``%%task`` cells).
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    created: datetime = Field(default_factory=now)
    updated: datetime = Field(default_factory=now)


class Log(_Model):
    """One log record of a flow run or task run."""

    flow_run_id: uuid.UUID | None
    task_run_id: uuid.UUID | None = None
    level: int = 20
    logger: str = "nbflow"
    message: str
    timestamp: datetime = Field(default_factory=now)


class Artifact(_Model):
    """A stored result or file of a run: output notebook, task result, report."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    flow_run_id: uuid.UUID | None = None
    task_run_id: uuid.UUID | None = None
    key: str
    kind: str = "result"
    #: Where the bytes are (a path or fsspec URL); small payloads may use ``data`` instead.
    uri: str | None = None
    data: dict[str, Any] | None = None
    created: datetime = Field(default_factory=now)


class SetStateStatus(StrEnum):
    """The orchestration gate's answer to a proposed state."""

    ACCEPT = "ACCEPT"
    REJECT = "REJECT"
    WAIT = "WAIT"
    ABORT = "ABORT"


class OrchestrationResult(_Model):
    """What the gate decided: the state now in force, and why."""

    status: SetStateStatus
    #: ACCEPT: the accepted state; REJECT: the run's current state; otherwise None.
    state: State | None = None
    reason: str | None = None
    #: WAIT: how long to wait before proposing again.
    delay_seconds: float | None = None


class FlowRunFilter(_Model):
    """Criteria for listing flow runs, newest first."""

    state_types: list[StateType] | None = None
    state_names: list[str] | None = None
    flow_ids: list[uuid.UUID] | None = None
    flow_names: list[str] | None = None
    deployment_ids: list[uuid.UUID] | None = None
    #: Only the child runs of these flow runs (``run_notebook`` pipelines).
    parent_flow_run_ids: list[uuid.UUID] | None = None
    #: Only runs whose expected start is at or after / before these times.
    start_after: datetime | None = None
    start_before: datetime | None = None
    #: Only runs changed (any field, a state) after this time: what a client that was
    #: away missed (the events websocket's ``since`` replay); pair with ``updated_asc``.
    updated_after: datetime | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    sort: Literal["created_desc", "expected_start_asc", "updated_asc"] = "created_desc"
    #: ``upcoming``: only Scheduled runs not due yet (sorted soonest first unless ``sort``
    #: is given); ``history``: every other run.  None: both.
    view: Literal["history", "upcoming"] | None = None

    @model_validator(mode="after")
    def _upcoming_soonest_first(self) -> FlowRunFilter:
        if self.view == "upcoming" and "sort" not in self.model_fields_set:
            self.sort = "expected_start_asc"
        return self


class TaskRunFilter(_Model):
    """Criteria for listing task runs."""

    flow_run_ids: list[uuid.UUID] | None = None
    state_types: list[StateType] | None = None
    limit: int = Field(default=1000, ge=1, le=100_000)
    offset: int = Field(default=0, ge=0)


class ClaimedRun(_Model):
    """A due run a dispatcher claimed: the run (now Pending), its configuration and token."""

    flow_run: FlowRun
    #: The final job variables: runner defaults < deployment < run, ``env`` per variable.
    job_variables: dict[str, Any] = Field(default_factory=dict)
    #: The run's own API token for its process (None: the claimer supplies the credential).
    token: str | None = None


class ConcurrencyLimit(_Model):
    """At most ``limit`` batch runs of a flow (``flow:<name>``) or a tag (``tag:<tag>``) at once."""

    key: str = Field(min_length=1, max_length=300)
    limit: int = Field(ge=0)
