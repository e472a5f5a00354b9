"""State types, state names and constructors for flow runs and task runs.

A state is a ``type`` (what the orchestrator reasons about) plus a ``name`` (what a person
reads).  Several names share a type: ``Late`` and ``AwaitingRetry`` are SCHEDULED,
``Cached`` is COMPLETED, ``TimedOut`` is FAILED.  The names are part of the public API.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "TERMINAL_TYPES",
    "AwaitingRetry",
    "Cached",
    "Cancelled",
    "Cancelling",
    "Completed",
    "Crashed",
    "Failed",
    "Late",
    "NotReady",
    "Paused",
    "Pending",
    "Retrying",
    "Running",
    "Scheduled",
    "State",
    "StateType",
    "Submitting",
    "TimedOut",
    "now",
]


def now() -> datetime:
    """Return the current time as an aware UTC datetime (the only clock nbflow uses)."""
    return datetime.now(UTC)


class StateType(StrEnum):
    """The orchestration-relevant kind of a state."""

    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"
    PAUSED = "PAUSED"


TERMINAL_TYPES: frozenset[StateType] = frozenset(
    {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
)

#: The default name of each type, used when a state is built without one.
DEFAULT_NAMES: dict[StateType, str] = {
    StateType.SCHEDULED: "Scheduled",
    StateType.PENDING: "Pending",
    StateType.RUNNING: "Running",
    StateType.COMPLETED: "Completed",
    StateType.FAILED: "Failed",
    StateType.CANCELLING: "Cancelling",
    StateType.CANCELLED: "Cancelled",
    StateType.CRASHED: "Crashed",
    StateType.PAUSED: "Paused",
}


class State(BaseModel):
    """One state of a flow run or task run.

    ``id`` doubles as the transition id: proposing a state whose id the run has already
    accepted is a no-op that answers ACCEPT again, so a client may safely retry a request.
    """

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: StateType
    name: str = ""
    timestamp: datetime = Field(default_factory=now)
    message: str | None = None
    scheduled_time: datetime | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        if not self.name:
            object.__setattr__(self, "name", DEFAULT_NAMES[self.type])

    @property
    def is_terminal(self) -> bool:
        """Whether the run is finished (COMPLETED, FAILED, CANCELLED or CRASHED)."""
        return self.type in TERMINAL_TYPES

    @property
    def is_final_success(self) -> bool:
        """Whether the state is COMPLETED (including ``Cached``)."""
        return self.type is StateType.COMPLETED

    def is_named(self, type_: StateType, name: str | None = None) -> bool:
        """Whether the state has this type and, if given, this name."""
        return self.type is type_ and (name is None or self.name == name)

    def __str__(self) -> str:
        text = self.name if self.name == DEFAULT_NAMES[self.type] else f"{self.name}({self.type})"
        return f"{text}: {self.message}" if self.message else text


def _make(type_: StateType, name: str | None, **kwargs: Any) -> State:
    return State(type=type_, name=name or DEFAULT_NAMES[type_], **kwargs)


def Scheduled(scheduled_time: datetime | None = None, **kwargs: Any) -> State:
    """A run waiting for its scheduled time (default: now)."""
    return _make(
        StateType.SCHEDULED,
        kwargs.pop("name", None),
        scheduled_time=scheduled_time or now(),
        **kwargs,
    )


def Late(scheduled_time: datetime | None = None, **kwargs: Any) -> State:
    """A scheduled run whose time has passed without anyone claiming it."""
    return Scheduled(scheduled_time, name="Late", **kwargs)


def AwaitingRetry(scheduled_time: datetime | None = None, **kwargs: Any) -> State:
    """A run that will be tried again at ``scheduled_time`` (retry or reschedule)."""
    return Scheduled(scheduled_time, name="AwaitingRetry", **kwargs)


def Pending(**kwargs: Any) -> State:
    """A run that was claimed and is being prepared."""
    return _make(StateType.PENDING, kwargs.pop("name", None), **kwargs)


def Submitting(**kwargs: Any) -> State:
    """A claimed run whose infrastructure is being started."""
    return Pending(name="Submitting", **kwargs)


def NotReady(**kwargs: Any) -> State:
    """A task run that cannot start because an upstream task did not complete."""
    return Pending(name="NotReady", **kwargs)


def Running(**kwargs: Any) -> State:
    """A run that is executing."""
    return _make(StateType.RUNNING, kwargs.pop("name", None), **kwargs)


def Retrying(**kwargs: Any) -> State:
    """A task run executing again after a failed attempt."""
    return Running(name="Retrying", **kwargs)


def Completed(**kwargs: Any) -> State:
    """A run that finished successfully."""
    return _make(StateType.COMPLETED, kwargs.pop("name", None), **kwargs)


def Cached(**kwargs: Any) -> State:
    """A task run whose result came from the cache without executing."""
    return Completed(name="Cached", **kwargs)


def Failed(**kwargs: Any) -> State:
    """A run that finished with an error in user code."""
    return _make(StateType.FAILED, kwargs.pop("name", None), **kwargs)


def TimedOut(**kwargs: Any) -> State:
    """A run that exceeded its timeout (a Failed state)."""
    return Failed(name="TimedOut", **kwargs)


def Crashed(**kwargs: Any) -> State:
    """A run whose infrastructure or process failed outside user code."""
    return _make(StateType.CRASHED, kwargs.pop("name", None), **kwargs)


def Cancelling(**kwargs: Any) -> State:
    """A run asked to stop; the infrastructure is being torn down."""
    return _make(StateType.CANCELLING, kwargs.pop("name", None), **kwargs)


def Cancelled(**kwargs: Any) -> State:
    """A run that was stopped on request."""
    return _make(StateType.CANCELLED, kwargs.pop("name", None), **kwargs)


def Paused(**kwargs: Any) -> State:
    """A run suspended until resumed."""
    return _make(StateType.PAUSED, kwargs.pop("name", None), **kwargs)
