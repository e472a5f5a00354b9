"""Several real processes writing one store at once, and racing to claim one run.

The workers are module-level functions run in ``spawn``-ed processes (fresh
interpreters, as runners and kernels are), started together behind a barrier.
"""

from __future__ import annotations

import logging
import multiprocessing
import traceback
from multiprocessing.synchronize import Barrier
from typing import Any
from uuid import UUID

import pytest

from nbflow.orchestration.store import Store
from nbflow.schemas import (
    DeploymentCreate,
    Flow,
    FlowRunCreate,
    FlowRunFilter,
    Log,
    TaskRun,
    TaskRunFilter,
)
from nbflow.states import Completed, Pending, Running, Scheduled

WRITERS = 4
RUNS_PER_WRITER = 60
LOG_BATCHES, LOGS_PER_BATCH = 20, 10
TASK_BATCHES, TASKS_PER_BATCH = 10, 20
CLAIMERS = 6
RACES = 5

_ctx = multiprocessing.get_context("spawn")


def _writer(url: str, index: int, barrier: Barrier, results: Any) -> None:
    """Open the store (migrating it, maybe concurrently) and write runs, logs, task runs."""
    retries: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = retries.append  # type: ignore[method-assign]
    logging.getLogger("nbflow.store").addHandler(handler)
    try:
        barrier.wait(timeout=120)
        store = Store.from_url(url)
        flow = store.create_flow(Flow(name="shared"))
        runs = [
            store.create_flow_run(FlowRunCreate(flow_id=flow.id, name=f"w{index}-{i}"))
            for i in range(RUNS_PER_WRITER)
        ]
        for run in runs[:10]:
            store.set_flow_run_state(run.id, Pending())
            store.set_flow_run_state(run.id, Running())
            store.set_flow_run_state(run.id, Completed())
        for b in range(LOG_BATCHES):
            store.write_logs(
                [
                    Log(flow_run_id=runs[b].id, message=f"{index}-{b}-{i}")
                    for i in range(LOGS_PER_BATCH)
                ]
            )
        for b in range(TASK_BATCHES):
            tasks = [
                TaskRun(flow_run_id=runs[b].id, name="t", task_key=f"t{i}", state=Completed())
                for i in range(TASKS_PER_BATCH)
            ]
            store.write_task_runs(tasks, [(t.id, t.state) for t in tasks])  # type: ignore[misc]
            store.heartbeat(runs[b].id)
        store.close()
        # BEGIN IMMEDIATE + busy_timeout queue the writers: the retry path never runs.
        results.put((index, "ok" if not retries else f"retried: {retries[0].getMessage()}"))
    except BaseException:
        results.put((index, traceback.format_exc()))


def _claimer(url: str, run_ids: list[str], barrier: Barrier, results: Any) -> None:
    """Propose Pending for each run right after every other claimer does."""
    try:
        store = Store.from_url(url)
        answers = []
        for run_id in run_ids:
            barrier.wait(timeout=120)
            answers.append(store.set_flow_run_state(UUID(run_id), Pending()).status.value)
        store.close()
        results.put(answers)
    except BaseException:
        results.put(traceback.format_exc())


def _creator(url: str, flow_id: str, deployment_id: str, barrier: Barrier, results: Any) -> None:
    """Create the same keyed runs (of a deployment, and ad hoc) as every other creator."""
    try:
        store = Store.from_url(url)
        ids = []
        for dep in (UUID(deployment_id), None):
            barrier.wait(timeout=120)
            run = store.create_flow_run(
                FlowRunCreate(flow_id=UUID(flow_id), deployment_id=dep, idempotency_key="k")
            )
            ids.append(str(run.id))
        store.close()
        results.put(ids)
    except BaseException:
        results.put(traceback.format_exc())


def _run_all(target: Any, args: list[tuple[Any, ...]], results: Any) -> list[Any]:
    procs = [_ctx.Process(target=target, args=a) for a in args]
    for p in procs:
        p.start()
    out = [results.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return out


@pytest.mark.slow
def test_concurrent_writers_lose_nothing(store_url: str) -> None:
    barrier, results = _ctx.Barrier(WRITERS), _ctx.Queue()
    # Nobody has opened the database yet: the writers also race to migrate it.
    out = _run_all(_writer, [(store_url, i, barrier, results) for i in range(WRITERS)], results)
    failures = [text for _, text in out if text != "ok"]
    assert not failures, failures[0]

    store = Store.from_url(store_url)
    try:
        assert len(store.read_flows()) == 1
        assert store.count_flow_runs() == WRITERS * RUNS_PER_WRITER
        done = FlowRunFilter(state_names=["Completed"])
        assert store.count_flow_runs(done) == WRITERS * 10
        logs = 0
        for run in store.read_flow_runs(FlowRunFilter(limit=1000)):
            logs += len(store.read_logs(run.id)[0])
            assert len(store.read_flow_run_states(run.id)) in (1, 4)
        assert logs == WRITERS * LOG_BATCHES * LOGS_PER_BATCH
        tasks = store.read_task_runs(TaskRunFilter(limit=100_000))
        assert len(tasks) == WRITERS * TASK_BATCHES * TASKS_PER_BATCH
        assert all(len(store.read_task_run_states(t.id)) == 1 for t in tasks[:50])
    finally:
        store.close()


@pytest.mark.slow
def test_exactly_one_claimer_wins_each_run(store: Store, store_url: str) -> None:
    flow = store.create_flow(Flow(name="claimed"))
    runs = [
        store.create_flow_run(FlowRunCreate(flow_id=flow.id, state=Scheduled()))
        for _ in range(RACES)
    ]
    run_ids = [str(r.id) for r in runs]
    barrier, results = _ctx.Barrier(CLAIMERS), _ctx.Queue()
    out = _run_all(
        _claimer, [(store_url, run_ids, barrier, results) for _ in range(CLAIMERS)], results
    )
    failures = [o for o in out if isinstance(o, str)]
    assert not failures, failures[0]
    for race in range(RACES):
        answers = sorted(o[race] for o in out)
        assert answers == ["ABORT"] * (CLAIMERS - 1) + ["ACCEPT"], answers
        states = store.read_flow_run_states(runs[race].id)
        assert [s.name for s in states] == ["Scheduled", "Pending"]


@pytest.mark.slow
def test_racing_creators_of_one_idempotency_key_get_one_run(store: Store, store_url: str) -> None:
    flow = store.create_flow(Flow(name="keyed"))
    dep = store.create_deployment(DeploymentCreate(flow_id=flow.id, name="d"))
    barrier, results = _ctx.Barrier(CLAIMERS), _ctx.Queue()
    args = [(store_url, str(flow.id), str(dep.id), barrier, results) for _ in range(CLAIMERS)]
    out = _run_all(_creator, args, results)
    failures = [o for o in out if isinstance(o, str)]
    assert not failures, failures[0]
    assert len({o[0] for o in out}) == 1 and len({o[1] for o in out}) == 1
    assert store.count_flow_runs() == 2
