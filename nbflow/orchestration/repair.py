"""Repairing a failed batch run: the plan a retry ``from_failed`` hands to its kernel.

A batch run persists each completed ``%%task`` cell's outputs through result storage
(its task run's Completed state names the ``result_key``).  Retrying the run
``from_failed`` (:meth:`FlowRunLifecycle.retry_flow_run`) writes into the new run's first
state the :class:`RepairPlan`: the run it repairs and, per task key, the task run that
completed there and where its outputs are.  The plan is fixed when the user asks for the
repair, so the new run's process reads only its own run (a run token can read nothing
else); its kernel restores a task cell from the plan when the cell's code and inputs are
unchanged (:mod:`nbflow.notebook.repair`) and runs it otherwise.

Pure functions and data: no store, no I/O (a kernel imports this module).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from nbflow.exceptions import ValidationError
from nbflow.schemas import FlowRun, TaskRun, TaskRunFilter
from nbflow.states import Scheduled, State, StateType

__all__ = [
    "REPAIR_DATA_KEY",
    "RepairPlan",
    "RestorableTask",
    "repair_plan",
    "repair_state",
    "task_runs_of",
]

#: The key of the plan in the ``data`` of a repair run's first state.
REPAIR_DATA_KEY = "repair"


@dataclass(frozen=True)
class RestorableTask:
    """A task cell that completed in the repaired run, and where its outputs were persisted."""

    task_key: str
    name: str
    task_run_id: UUID
    result_key: str


@dataclass(frozen=True)
class RepairPlan:
    """The run a repair repairs, and its restorable task cells by task key."""

    from_flow_run_id: UUID
    tasks: dict[str, RestorableTask]

    def to_data(self) -> dict[str, Any]:
        """Return the plan as JSON data (the first state's ``data["repair"]``)."""
        return {
            "from_flow_run_id": str(self.from_flow_run_id),
            "tasks": [
                {
                    "task_key": t.task_key,
                    "name": t.name,
                    "task_run_id": str(t.task_run_id),
                    "result_key": t.result_key,
                }
                for t in self.tasks.values()
            ],
        }

    @classmethod
    def from_data(cls, data: Any) -> RepairPlan | None:
        """Read a plan written by :meth:`to_data`; None when ``data`` is not one."""
        if not isinstance(data, dict) or "from_flow_run_id" not in data:
            return None
        tasks: dict[str, RestorableTask] = {}
        for item in data.get("tasks") or []:
            task = RestorableTask(
                str(item["task_key"]),
                str(item["name"]),
                UUID(str(item["task_run_id"])),
                str(item["result_key"]),
            )
            tasks[task.task_key] = task
        return cls(UUID(str(data["from_flow_run_id"])), tasks)

    @classmethod
    def from_states(cls, states: Iterable[State]) -> RepairPlan | None:
        """Return the plan a run's state history carries (None: the run is no repair)."""
        for state in states:
            plan = cls.from_data((state.data or {}).get(REPAIR_DATA_KEY))
            if plan is not None:
                return plan
        return None


def task_runs_of(run: FlowRun) -> TaskRunFilter:
    """Return the filter of every task run of ``run``."""
    return TaskRunFilter(flow_run_ids=[run.id], limit=100_000)


def repair_plan(
    old: FlowRun, task_runs: Sequence[TaskRun], *, field: str = "from_failed"
) -> RepairPlan:
    """Return the plan to repair ``old``: its completed task runs with persisted outputs.

    A run that completed has no failed cell: :class:`ValidationError` naming ``field``.
    """
    state = old.state
    if state is None or state.type not in (
        StateType.FAILED,
        StateType.CRASHED,
        StateType.CANCELLED,
    ):
        raise ValidationError(
            field,
            True,
            f"flow run {old.id} ended {state.name if state else 'without a state'}: only a "
            "Failed, Crashed or Cancelled run has a failed cell to repair from",
            "retry it without from_failed to run every cell again",
        )
    tasks: dict[str, RestorableTask] = {}
    for task_run in task_runs:  # oldest first: a later run of a key wins
        done = task_run.state
        result_key = (done.data or {}).get("result_key") if done is not None else None
        if done is None or done.type is not StateType.COMPLETED or not result_key:
            tasks.pop(task_run.task_key, None)
            continue
        tasks[task_run.task_key] = RestorableTask(
            task_run.task_key, task_run.name, task_run.id, str(result_key)
        )
    return RepairPlan(old.id, tasks)


def repair_state(
    old: FlowRun, task_runs: Sequence[TaskRun], *, field: str = "from_failed"
) -> State:
    """Return the first state of a repair of ``old``: Scheduled, carrying the plan."""
    plan = repair_plan(old, task_runs, field=field)
    count = len(plan.tasks)
    return Scheduled(
        message=(
            f"a repair of flow run {old.id} from its failed cell "
            f"({count} completed task cell{'' if count == 1 else 's'} may be restored)"
        ),
        data={REPAIR_DATA_KEY: plan.to_data()},
    )
