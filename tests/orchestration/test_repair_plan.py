"""The repair plan: which task runs of a finished run a repair may restore (pure)."""

from __future__ import annotations

from uuid import uuid4

import pytest

from nbflow.exceptions import ValidationError
from nbflow.orchestration.repair import RepairPlan, repair_plan, repair_state
from nbflow.schemas import FlowRun, TaskRun
from nbflow.states import Cached, Cancelled, Completed, Crashed, Failed, State


def _run(state: State) -> FlowRun:
    return FlowRun(name="r", flow_id=uuid4(), state=state, mode="batch")


def _task(run: FlowRun, key: str, state: State) -> TaskRun:
    return TaskRun(flow_run_id=run.id, name=key, task_key=key, state=state)


@pytest.mark.parametrize("end", [Failed, Crashed, Cancelled])
def test_completed_tasks_with_persisted_outputs_are_restorable(end: type) -> None:
    old = _run(end())
    tasks = [
        _task(old, "extract", Completed(data={"result_key": "k1"})),
        _task(old, "again", Completed(data={"result_key": "first"})),
        _task(old, "again", Completed(data={"result_key": "second"})),  # the later one wins
        _task(old, "restored", Cached(data={"result_key": "k2"})),  # a repair's, chained
        _task(old, "unpersisted", Completed()),
        _task(old, "report", Failed(message="boom")),
        _task(old, "redone", Completed(data={"result_key": "k3"})),
        _task(old, "redone", Failed()),  # its latest run failed: not restorable
    ]
    plan = repair_plan(old, tasks)
    assert {k: t.result_key for k, t in plan.tasks.items()} == {
        "extract": "k1",
        "again": "second",
        "restored": "k2",
    }
    state = repair_state(old, tasks)
    assert state.type.value == "SCHEDULED" and "3 completed task cells" in (state.message or "")
    assert RepairPlan.from_states([state]) == plan


def test_a_completed_run_has_nothing_to_repair() -> None:
    with pytest.raises(ValidationError) as caught:
        repair_plan(_run(Completed()), [], field="body.from_failed")
    assert caught.value.field == "body.from_failed" and "Completed" in str(caught.value)


def test_states_without_a_plan_are_no_repair() -> None:
    assert RepairPlan.from_states([Completed(data={"result_key": "x"}), Failed()]) is None
