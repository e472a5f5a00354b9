"""Synchronous in-process events for live views (the widget, the panel bridge).

Subscribers are called from engine threads as state changes happen, so they must be quick
and thread-safe.  With no subscriber, emitting costs one truth test.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from nbflow.schemas import TaskRun
from nbflow.states import State

__all__ = ["Event", "FlowRunEvent", "TaskRunEvent", "emit", "subscribe"]

log = logging.getLogger("nbflow.engine.events")


@dataclass(frozen=True)
class FlowRunEvent:
    """A flow run entered ``state``."""

    flow_run_id: UUID
    state: State


@dataclass(frozen=True)
class TaskRunEvent:
    """A task run of ``flow_run_id`` entered ``state`` (``task_run`` is a snapshot)."""

    flow_run_id: UUID | None
    task_run: TaskRun
    state: State


Event = FlowRunEvent | TaskRunEvent
Callback = Callable[[Event], None]

_lock = threading.Lock()
#: Replaced (never mutated) on change, so emitters iterate without a lock.
_subscribers: tuple[Callback, ...] = ()


def subscribe(callback: Callback) -> Callable[[], None]:
    """Call ``callback(event)`` on every flow-run and task-run state change; return an unsubscriber."""
    global _subscribers
    with _lock:
        _subscribers = (*_subscribers, callback)

    def unsubscribe() -> None:
        global _subscribers
        with _lock:
            _subscribers = tuple(s for s in _subscribers if s is not callback)

    return unsubscribe


def has_subscribers() -> bool:
    """Whether anyone listens (lets callers skip building events)."""
    return bool(_subscribers)


def emit(event: Event) -> None:
    """Deliver ``event`` to every subscriber; a failing subscriber is logged, not raised."""
    for callback in _subscribers:
        try:
            callback(event)
        except Exception:
            log.exception("nbflow event subscriber %r failed", callback)
