"""The engine: the single code path that runs flows and tasks.

``FlowRunEngine`` proposes a flow run's states and runs its task runs; task runs are
orchestrated here, client-side, and shipped to the store in batches by the recorder.
``nbflow.engine.dask_runner`` (and dask) load only when the Dask runner is used.
"""

from __future__ import annotations

from nbflow.engine import events
from nbflow.engine.context import (
    FlowRunContext,
    TaskRunContext,
    current_flow_run,
    current_task_run,
)
from nbflow.engine.flow_engine import FlowRunEngine
from nbflow.engine.futures import TaskRunFuture
from nbflow.engine.options import TaskOptions
from nbflow.engine.task_runners import TaskRunner, ThreadPoolTaskRunner
from nbflow.exceptions import NbflowError
from nbflow.schemas import TaskRun
from nbflow.states import State

__all__ = [
    "FlowRunContext",
    "FlowRunEngine",
    "TaskOptions",
    "TaskRunContext",
    "TaskRunFuture",
    "TaskRunner",
    "ThreadPoolTaskRunner",
    "current_flow_run",
    "current_task_run",
    "events",
    "run_task_in_flow",
]


def run_task_in_flow(
    fn: object, *args: object, options: TaskOptions | None = None, **kwargs: object
) -> tuple[TaskRun, State, object]:
    """Run ``fn(*args, **kwargs)`` as a task run of the current flow run (see ``run_task``)."""
    engine = current_flow_run()
    if engine is None:
        raise NbflowError(
            "run_task_in_flow() needs a running flow run (inside @flow or after %%flow)"
        )
    return engine.run_task(fn, args, kwargs, options=options)  # type: ignore[arg-type]
