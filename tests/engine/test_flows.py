"""Flows and tasks end to end against a real embedded store."""

from __future__ import annotations

import asyncio
import threading

import pytest

from nbflow import flow, get_run_logger, task, unmapped
from nbflow.client.embedded import EmbeddedClient
from nbflow.exceptions import NbflowError, ParameterError, UpstreamNotReady
from nbflow.schemas import FlowRunFilter, TaskRunFilter
from nbflow.states import StateType


def task_runs(client: EmbeddedClient, flow_run_id: object = None) -> list:
    f = TaskRunFilter(flow_run_ids=[flow_run_id]) if flow_run_id else TaskRunFilter()
    return client.read_task_runs(f)


def only_run(client: EmbeddedClient):
    runs = client.read_flow_runs(FlowRunFilter())
    assert len(runs) == 1
    return runs[0]


@task
def add(x: int, y: int) -> int:
    return x + y


@task
def boom(x: int) -> int:
    raise ValueError(f"boom {x}")


def test_sync_flow_records_runs_and_states(store: EmbeddedClient) -> None:
    @flow
    def pipeline(n: int = 3) -> int:
        a = add(1, 2)
        b = add.submit(a, n)
        c = add.submit(b, 10)
        return c.result()

    assert pipeline(4) == 17
    run = only_run(store)
    assert run.state is not None and run.state.type is StateType.COMPLETED
    assert run.parameters == {"n": 4}
    assert [s.type for s in store.read_flow_run_states(run.id)][-2:] == [
        StateType.RUNNING,
        StateType.COMPLETED,
    ]
    trs = task_runs(store, run.id)
    assert len(trs) == 3
    assert all(t.state is not None and t.state.name == "Completed" for t in trs)
    by_key = sorted(trs, key=lambda t: t.dynamic_key)
    # A submitted run depends on the task runs of the futures it was given.
    assert by_key[1].upstream == []
    assert by_key[2].upstream == [by_key[1].id]
    names = [s.name for s in store.read_task_run_states(by_key[1].id)]
    assert names == ["Pending", "Running", "Completed"]


def test_map_and_unmapped(store: EmbeddedClient) -> None:
    @flow
    def mapped() -> list[int]:
        futures = add.map([1, 2, 3], unmapped(100))
        return [f.result() for f in futures]

    assert mapped() == [101, 102, 103]
    trs = task_runs(store)
    assert sorted(t.dynamic_key for t in trs) == [0, 1, 2]


def test_upstream_failure_gives_not_ready_and_failed_flow(store: EmbeddedClient) -> None:
    @flow
    def broken() -> None:
        bad = boom.submit(1)
        add.submit(bad, 1)

    with pytest.raises(ValueError, match="boom 1"):
        broken()
    run = only_run(store)
    assert run.state is not None and run.state.type is StateType.FAILED
    states = {t.name: t.state for t in task_runs(store, run.id)}
    assert states["boom"] is not None and states["boom"].type is StateType.FAILED
    assert states["add"] is not None and states["add"].name == "NotReady"
    assert states["add"].type is StateType.PENDING


def test_consumed_failure_lets_the_flow_complete(store: EmbeddedClient) -> None:
    @flow
    def tolerant() -> str:
        try:
            boom(2)
        except ValueError as exc:
            return str(exc)
        return "no"

    assert tolerant() == "boom 2"
    assert only_run(store).state.type is StateType.COMPLETED  # type: ignore[union-attr]


def test_result_of_not_ready_future_raises(store: EmbeddedClient) -> None:
    @flow
    def waits() -> str:
        fut = add.submit(boom.submit(3), 1)
        with pytest.raises(UpstreamNotReady):
            fut.result()
        return fut.wait().name

    # The body looked at the failure and handled it: the flow run completes.
    assert waits() == "NotReady"
    assert only_run(store).state.type is StateType.COMPLETED  # type: ignore[union-attr]


def test_retries_count_and_delays(store: EmbeddedClient) -> None:
    attempts: list[int] = []

    @task(retries=3, retry_delay_seconds=[0.1, 0.3])
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 4:
            raise RuntimeError("not yet")
        return "ok"

    @flow
    def retrying() -> str:
        return flaky()

    assert retrying() == "ok"
    (tr,) = task_runs(store)
    assert tr.run_count == 4
    states = store.read_task_run_states(tr.id)
    names = [s.name for s in states]
    assert names == [
        "Running",
        "AwaitingRetry",
        "Retrying",
        "AwaitingRetry",
        "Retrying",
        "AwaitingRetry",
        "Retrying",
        "Completed",
    ]
    waits = [
        (s.scheduled_time - s.timestamp).total_seconds()
        for s in states
        if s.name == "AwaitingRetry" and s.scheduled_time is not None
    ]
    # One delay per retry, the last repeating; generous bounds only.
    assert [round(w, 1) for w in waits] == [0.1, 0.3, 0.3]


def test_retries_exhausted_fail_the_flow(store: EmbeddedClient) -> None:
    @task(retries=2, retry_delay_seconds=0, retry_jitter_factor=0.5)
    def always() -> None:
        raise KeyError("nope")

    @flow
    def doomed() -> None:
        always()

    with pytest.raises(KeyError):
        doomed()
    (tr,) = task_runs(store)
    assert tr.run_count == 3 and tr.state is not None and tr.state.name == "Failed"
    assert "KeyError" in (tr.state.message or "")


def test_logs_reach_the_store(store: EmbeddedClient) -> None:
    @task(log_prints=True)
    def chatty(x: int) -> int:
        get_run_logger().info("task says %s", x)
        print("printed", x)
        return x

    @flow
    def talk() -> None:
        get_run_logger().warning("flow says hi")
        chatty(7)
        chatty.submit(8).result()

    talk()
    run = only_run(store)
    messages = [log.message for log in store.read_logs(run.id).logs]
    assert "flow says hi" in messages
    assert "task says 7" in messages and "task says 8" in messages
    assert "printed 7" in messages
    task_logs = [log for log in store.read_logs(run.id).logs if log.message == "task says 7"]
    assert task_logs[0].task_run_id is not None


def test_get_run_logger_outside_a_run_raises() -> None:
    with pytest.raises(NbflowError, match="outside a flow run"):
        get_run_logger()


def test_sync_flow_inside_a_running_event_loop(store: EmbeddedClient) -> None:
    @flow
    def inner() -> int:
        return add.submit(1, 1).result() + add(2, 2)

    async def cell() -> int:
        # A Jupyter cell runs with a loop already running in this thread.
        return inner()

    assert asyncio.run(cell()) == 6
    assert only_run(store).state.type is StateType.COMPLETED  # type: ignore[union-attr]


def test_async_flow_and_tasks(store: EmbeddedClient) -> None:
    @task
    async def double(x: int) -> int:
        await asyncio.sleep(0.01)
        return 2 * x

    @flow
    async def aflow(x: int) -> int:
        direct = await double(x)
        fut = double.submit(direct)
        sync_fut = add.submit(fut, 1)
        return await sync_fut.aresult()

    coro = aflow(3)
    assert asyncio.iscoroutine(coro)
    assert asyncio.run(coro) == 13
    run = only_run(store)
    assert run.state is not None and run.state.type is StateType.COMPLETED
    assert len(task_runs(store, run.id)) == 3


def test_async_task_submitted_from_a_sync_flow_runs_on_the_loop_thread(
    store: EmbeddedClient,
) -> None:
    @task
    async def where() -> str:
        return threading.current_thread().name

    @flow
    def sync_flow() -> str:
        return where.submit().result()

    assert sync_flow() == "nbflow-loop"


def test_subflow_is_a_nested_run(store: EmbeddedClient) -> None:
    @flow
    def child(x: int) -> int:
        return add(x, 1)

    @flow
    def parent() -> int:
        return child(1) + child(2)

    assert parent() == 5
    runs = store.read_flow_runs(FlowRunFilter())
    assert len(runs) == 3
    parent_run = next(r for r in runs if r.flow_name == "parent" or not r.tags)
    children = [r for r in runs if r.tags]
    assert len(children) == 2
    assert all(f"parent:{parent_run.id}" in r.tags for r in children)
    assert all(r.state is not None and r.state.type is StateType.COMPLETED for r in runs)


def test_body_exception_fails_keyboard_interrupt_cancels_base_exception_crashes(
    store: EmbeddedClient,
) -> None:
    @flow
    def raises(kind: str) -> None:
        if kind == "value":
            raise ValueError("bad")
        if kind == "interrupt":
            raise KeyboardInterrupt
        raise SystemExit(3)

    with pytest.raises(ValueError):
        raises("value")
    with pytest.raises(KeyboardInterrupt):
        raises("interrupt")
    with pytest.raises(SystemExit):
        raises("exit")
    runs = store.read_flow_runs(FlowRunFilter(sort="created_desc"))
    by_kind = {r.parameters["kind"]: r.state.type for r in runs if r.state}
    assert by_kind == {
        "value": StateType.FAILED,
        "interrupt": StateType.CANCELLED,
        "exit": StateType.CRASHED,
    }


def test_parameters_are_coerced_and_validated(store: EmbeddedClient) -> None:
    @flow
    def typed(n: int, name: str = "x", ratio: float = 0.5) -> tuple[int, str, float]:
        return n, name, ratio

    assert typed.validate_parameters({"n": "3"}) == {"n": 3, "name": "x", "ratio": 0.5}
    with pytest.raises(ParameterError) as info:
        typed.validate_parameters({"n": "three"})
    assert info.value.field == "parameters.n" and info.value.value == "three"
    assert "int" in str(info.value)
    with pytest.raises(ParameterError, match="unknown parameter"):
        typed.validate_parameters({"n": 1, "m": 2})
    with pytest.raises(ParameterError, match="missing"):
        typed.validate_parameters({})
    schema = typed.parameters_schema()
    assert schema["properties"]["n"]["type"] == "integer"
    assert schema["required"] == ["n"]
    assert typed("5") == (5, "x", 0.5)
    stored = store.read_flow_by_name("typed")
    assert stored.parameters_schema["properties"]["ratio"]["default"] == 0.5


def test_task_outside_a_flow_runs_unrecorded(store: EmbeddedClient) -> None:
    assert add(2, 3) == 5
    with pytest.raises(NbflowError, match="needs a running flow"):
        add.submit(1, 2)
    assert task_runs(store) == []


def test_flow_timeout(store: EmbeddedClient) -> None:
    import time

    @flow(timeout_seconds=0.3)
    def slow() -> None:
        time.sleep(30)

    from nbflow.engine.flows import FlowRunTimeout

    with pytest.raises(FlowRunTimeout):
        slow()
    state = only_run(store).state
    assert state is not None and state.name == "TimedOut" and state.type is StateType.FAILED


def test_dependent_released_while_the_flow_finishes(store: EmbeddedClient) -> None:
    import time

    @task
    def slow_fail() -> None:
        time.sleep(0.3)
        raise ValueError("late")

    @flow
    def ends_first() -> None:
        # The body returns while the upstream still runs: its dependent is released
        # during shutdown and must still be recorded (NotReady), not hang the flow.
        add.submit(slow_fail.submit(), 1)

    for _ in range(3):
        with pytest.raises(ValueError, match="late"):
            ends_first()
    trs = task_runs(store)
    assert sorted(t.state.name for t in trs if t.state) == ["Failed"] * 3 + ["NotReady"] * 3
