"""Run contexts: which flow run and task run the current code executes in (contextvars)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from nbflow.schemas import TaskRun

if TYPE_CHECKING:
    from nbflow.engine.flow_engine import FlowRunEngine
    from nbflow.engine.options import TaskOptions
    from nbflow.engine.recorder import RunSink

__all__ = [
    "FlowRunContext",
    "TaskRunContext",
    "current_flow_run",
    "current_task_run",
    "flow_run_context",
    "task_run_context",
]


@dataclass
class FlowRunContext:
    """The flow run the current code belongs to."""

    engine: FlowRunEngine


@dataclass
class TaskRunContext:
    """The task run the current code executes (also given to ``cache_key_fn``)."""

    task_run: TaskRun
    options: TaskOptions
    sink: RunSink
    parameters: dict[str, Any] = field(default_factory=dict)
    fn: Any = None

    @property
    def flow_run_id(self) -> UUID | None:
        """The flow run of this task run (None for a task run outside a flow)."""
        return self.task_run.flow_run_id


flow_run_context: ContextVar[FlowRunContext | None] = ContextVar("nbflow_flow_run", default=None)
task_run_context: ContextVar[TaskRunContext | None] = ContextVar("nbflow_task_run", default=None)


def current_flow_run() -> FlowRunEngine | None:
    """Return the engine of the flow run the caller executes in, or None."""
    ctx = flow_run_context.get()
    return ctx.engine if ctx is not None else None


def current_task_run() -> TaskRunContext | None:
    """Return the task run the caller executes in, or None."""
    return task_run_context.get()
