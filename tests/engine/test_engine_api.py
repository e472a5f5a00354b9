"""The FlowRunEngine API the magics and ``nbflow execute`` use, and events."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from nbflow import flow, task
from nbflow.client.embedded import EmbeddedClient
from nbflow.engine import (
    FlowRunEngine,
    TaskOptions,
    ThreadPoolTaskRunner,
    events,
    run_task_in_flow,
)
from nbflow.exceptions import NbflowError, TransitionRejected
from nbflow.schemas import Flow, FlowRunCreate, TaskRunFilter
from nbflow.states import Pending, Scheduled, StateType


@task
def inc(x: int) -> int:
    return x + 1


def test_interactive_engine_runs_cells_and_finishes(store: EmbeddedClient) -> None:
    seen: list[events.Event] = []
    unsubscribe = events.subscribe(seen.append)
    try:
        engine = FlowRunEngine.start(
            flow_name="sales",
            parameters={"region": "EU"},
            parameters_schema={"properties": {"region": {"type": "string"}}},
            source="sales.ipynb",
            mode="interactive",
        )
        assert engine.flow_run.mode == "interactive"
        with engine.activate():
            first, state, value = engine.run_task(
                lambda: 1, options=TaskOptions(name="extract"), task_key="cell-1", outputs=["raw"]
            )
            assert value == 1 and state.name == "Completed"
            _second, state2, err = engine.run_task(
                lambda: 1 / 0,
                options=TaskOptions(name="report"),
                task_key="cell-2",
                inputs=["raw"],
                upstream=[first.id],
            )
            assert state2.type is StateType.FAILED and isinstance(err, ZeroDivisionError)
            assert inc(1) == 2  # @task calls bind to the active run
            _run3, _state3, value3 = run_task_in_flow(lambda x: x * 2, 21)
            assert value3 == 42
        final = engine.finish()
    finally:
        unsubscribe()
    assert final.type is StateType.COMPLETED  # a failed cell raised into the caller already
    assert engine.finish() is final
    trs = {t.task_key: t for t in store.read_task_runs(TaskRunFilter())}
    assert trs["cell-2"].upstream == [first.id] and trs["cell-2"].inputs == ["raw"]
    assert trs["cell-1"].outputs == ["raw"]
    flow_events = [e for e in seen if isinstance(e, events.FlowRunEvent)]
    assert [e.state.type for e in flow_events] == [StateType.RUNNING, StateType.COMPLETED]
    task_events = [e for e in seen if isinstance(e, events.TaskRunEvent)]
    assert [e.state.name for e in task_events if e.task_run.task_key == "cell-1"] == [
        "Running",
        "Completed",
    ]
    assert store.read_flow(engine.flow_run.flow_id).source == "sales.ipynb"


def test_batch_engine_uses_an_existing_run_and_refuses_a_second_start(
    store: EmbeddedClient,
) -> None:
    flow_ = store.create_flow(Flow(name="nb"))
    run = store.create_flow_run(FlowRunCreate(flow_id=flow_.id, state=Scheduled(), mode="batch"))
    store.set_flow_run_state(run.id, Pending())
    engine = FlowRunEngine.start(flow_run_id=run.id, mode="batch")
    assert engine.flow_run.id == run.id
    with pytest.raises(TransitionRejected):
        FlowRunEngine.start(flow_run_id=run.id, mode="batch")  # already Running
    engine.finish()
    assert store.read_flow_run(run.id).state.type is StateType.COMPLETED  # type: ignore[union-attr]


def test_cancel_stops_new_task_runs(store: EmbeddedClient) -> None:
    engine = FlowRunEngine.start(flow_name="cancellable", mode="interactive")
    with engine.activate():
        engine.run_task(lambda: 1, options=TaskOptions(name="before"))
        engine.cancel()
        _, state, _ = engine.run_task(lambda: 1, options=TaskOptions(name="after"))
    assert state.type is StateType.CANCELLED
    assert engine.finish().type is StateType.CANCELLED


def test_engine_needs_a_name_or_a_run(store: EmbeddedClient) -> None:
    with pytest.raises(NbflowError, match="flow_name"):
        FlowRunEngine.start()


def test_ten_thousand_tasks_are_all_in_the_store_after_the_flow(store: EmbeddedClient) -> None:
    @flow
    def many() -> int:
        total = 0
        for i in range(5000):
            total += inc(i)
        futures = [inc.submit(i) for i in range(5000)]
        return total + sum(f.result() for f in futures)

    many()
    trs = store.read_task_runs(TaskRunFilter(limit=100_000))
    assert len(trs) == 10_000
    assert all(t.state is not None and t.state.type is StateType.COMPLETED for t in trs)


def test_submitted_runs_use_pool_threads_when_nobody_waits(store: EmbeddedClient) -> None:
    names: set[str] = set()
    gate = threading.Event()

    @task
    def blocked(i: int) -> None:
        names.add(threading.current_thread().name)
        gate.wait(10)

    @flow
    def parallel() -> None:
        futures = [blocked.submit(i) for i in range(3)]
        while len(names) < 3:
            gate.wait(0.01)
        gate.set()
        for f in futures:
            f.result()

    parallel()
    assert len(names) == 3 and all(n.startswith("nbflow-task") for n in names)


def test_import_stays_light() -> None:
    code = (
        "import sys, nbflow\n"
        "from nbflow import flow, task, get_run_logger, unmapped\n"
        "heavy = [m for m in ('sqlalchemy', 'tornado', 'IPython', 'docker', 'kubernetes', "
        "'dask', 'distributed', 'jupyter_server') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_heartbeat_and_cancel_requested_elsewhere(store: EmbeddedClient) -> None:
    from nbflow.states import Cancelling

    engine = FlowRunEngine.start(flow_name="watched", mode="batch", heartbeat_seconds=0.05)
    store.set_flow_run_state(engine.flow_run.id, Cancelling())
    for _ in range(200):
        if engine.is_cancelled:
            break
        threading.Event().wait(0.05)
    assert engine.is_cancelled
    assert store.read_flow_run(engine.flow_run.id).heartbeat is not None
    assert engine.finish().type is StateType.CANCELLED


def test_wait_answer_is_honoured(store: EmbeddedClient) -> None:
    from datetime import timedelta

    from nbflow.states import now

    flow_ = store.create_flow(Flow(name="later"))
    start_at = now() + timedelta(seconds=0.5)
    run = store.create_flow_run(
        FlowRunCreate(flow_id=flow_.id, state=Scheduled(start_at), mode="batch")
    )
    store.set_flow_run_state(run.id, Pending())  # claimed early: Running waits for its time
    engine = FlowRunEngine.start(flow_run_id=run.id, mode="batch")
    assert engine.orchestration is not None
    assert engine.flow_run.state is not None and engine.flow_run.state.type is StateType.RUNNING
    assert now() >= start_at
    engine.finish()


def test_interrupt_cancels_queued_task_runs(store: EmbeddedClient) -> None:
    gate = threading.Event()

    @task
    def hold() -> None:
        gate.wait(10)

    @flow(task_runner=ThreadPoolTaskRunner(1))
    def interrupted() -> None:
        for _ in range(5):
            hold.submit()
        threading.Timer(0.3, gate.set).start()  # releases the one running task run
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    trs = store.read_task_runs(TaskRunFilter())
    assert len(trs) == 5
    cancelled = [t for t in trs if t.state is not None and t.state.type is StateType.CANCELLED]
    assert len(cancelled) >= 4  # the queued ones never started
    run = store.read_flow_runs()[0]
    assert run.state is not None and run.state.type is StateType.CANCELLED
