"""Task timeouts: main thread (SIGALRM), worker thread (async exception), async (cancel)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from nbflow import flow, task
from nbflow.client.embedded import EmbeddedClient
from nbflow.exceptions import TaskRunTimeout
from nbflow.schemas import TaskRunFilter
from nbflow.states import StateType


def assert_timed_out(store: EmbeddedClient, count: int = 1) -> None:
    trs = store.read_task_runs(TaskRunFilter())
    assert len(trs) == count
    for tr in trs:
        assert tr.state is not None
        assert tr.state.name == "TimedOut" and tr.state.type is StateType.FAILED


def test_sync_task_in_main_thread_interrupts_sleep(store: EmbeddedClient) -> None:
    assert threading.current_thread() is threading.main_thread()

    @task(timeout_seconds=0.2)
    def sleeper() -> None:
        time.sleep(60)  # one long C call: only a signal interrupts it

    @flow
    def main_thread() -> None:
        sleeper()

    started = time.monotonic()
    with pytest.raises(TaskRunTimeout):
        main_thread()
    assert time.monotonic() - started < 30  # sanity: not the full sleep
    assert_timed_out(store)


def test_sync_task_in_worker_thread_gets_async_exception(store: EmbeddedClient) -> None:
    threads: list[str] = []

    @task(timeout_seconds=0.2)
    def busy() -> None:
        threads.append(threading.current_thread().name)
        for _ in range(600):
            time.sleep(0.05)

    @flow
    def worker_thread() -> str:
        fut = busy.submit()
        # Let the pool thread pick it up instead of running it here.
        while not threads:
            time.sleep(0.01)
        return fut.wait().name

    started = time.monotonic()
    assert worker_thread() == "TimedOut"
    assert time.monotonic() - started < 20
    assert threads[0].startswith("nbflow-task")
    assert_timed_out(store)


def test_async_task_is_cancelled(store: EmbeddedClient) -> None:
    @task(timeout_seconds=0.2)
    async def slow() -> None:
        await asyncio.sleep(60)

    @flow
    async def async_flow() -> None:
        await slow()

    started = time.monotonic()
    with pytest.raises(TaskRunTimeout):
        asyncio.run(async_flow())
    assert time.monotonic() - started < 30
    assert_timed_out(store)


def test_timed_out_task_is_retried(store: EmbeddedClient) -> None:
    calls: list[int] = []

    @task(timeout_seconds=0.2, retries=1)
    def first_slow() -> str:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(60)
        return "second try"

    @flow
    def retried() -> str:
        return first_slow()

    assert retried() == "second try"
    (tr,) = store.read_task_runs(TaskRunFilter())
    names = [s.name for s in store.read_task_run_states(tr.id)]
    assert names == ["Running", "AwaitingRetry", "Retrying", "Completed"]
