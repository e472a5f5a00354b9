"""The batch write path: hand-written state JSON and driver-ready rows read back exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from nbflow.orchestration.store import Store
from nbflow.orchestration.store.batch import state_json
from nbflow.schemas import Flow, FlowRunCreate, Log, TaskRun
from nbflow.states import AwaitingRetry, Completed, Failed, Pending, Running, State, StateType

STATES = [
    Pending(),
    Running(message='quotes " and \\ and ünïcode ✓'),
    AwaitingRetry(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), message="retry"),
    Completed(data={"result_key": "abc", "n": [1, 2.5, None, True], "nested": {"k": "v"}}),
    # Values JSON cannot hold as is: the pydantic fallback.
    Failed(data={"when": datetime(2026, 1, 1, tzinfo=UTC), "nan": float("nan")}),
    State(type=StateType.COMPLETED, name="Cached", data={"x": (1, 2)}),
    # Not UTC and whole seconds: isoformat differs from the common case.
    State(
        type=StateType.RUNNING,
        timestamp=datetime(2026, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2))),
    ),
]


@pytest.mark.parametrize("state", STATES, ids=lambda s: s.name)
def test_state_json_reads_back_equal_to_pydantic(state: State) -> None:
    text = state_json(state)
    json.loads(text)  # valid JSON
    assert State.model_validate_json(text) == State.model_validate_json(state.model_dump_json())


def test_written_task_runs_states_and_logs_read_back_exactly(store: Store) -> None:
    run = store.create_flow_run(FlowRunCreate(flow_id=store.create_flow(Flow(name="b")).id))
    upstream = TaskRun(flow_run_id=run.id, name="up", task_key="up")
    task = TaskRun(
        flow_run_id=run.id,
        name="t",
        task_key="t",
        dynamic_key=3,
        state=STATES[3],
        run_count=2,
        start_time=datetime(2026, 1, 1, 1, 2, 3, 456789, tzinfo=UTC),
        end_time=datetime(2026, 1, 1, 3, 2, 3, tzinfo=timezone(timedelta(hours=2))),
        total_run_time=1.5,
        cache_key="k",
        cache_expiration=datetime(2027, 1, 1, tzinfo=UTC),
        upstream=[upstream.id],
        inputs=["a"],
        outputs=["b", "ü"],
        tags=["x"],
    )
    store.write_task_runs(
        [upstream, task], [(task.id, s) for s in STATES] + [(upstream.id, Pending())]
    )
    by_id = {t.id: t for t in store.read_task_runs()}
    assert by_id[task.id] == task
    assert by_id[upstream.id] == upstream
    assert store.read_task_run_states(task.id) == [
        State.model_validate_json(s.model_dump_json()) for s in STATES
    ]
    log = Log(flow_run_id=run.id, task_run_id=task.id, level=30, logger="l", message="m ✓")
    store.write_logs([log, Log(flow_run_id=run.id, message="flow-level")])
    logs, _ = store.read_logs(run.id)
    assert logs[0] == log
    assert logs[1].task_run_id is None
