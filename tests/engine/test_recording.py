"""The recorder keeps up with a long flow: every task run and every state reaches the store."""

from __future__ import annotations

import gc

import pytest
import sqlalchemy as sa

from nbflow import flow, task
from nbflow.client.embedded import EmbeddedClient
from nbflow.orchestration.store.tables import task_run_states, task_runs
from nbflow.schemas import TaskRunFilter
from nbflow.states import StateType

N = 10_000


@task
def noop(i: int) -> int:
    return i


@flow
def many(n: int) -> int:
    total = 0
    for i in range(n // 2):  # called: Running, Completed
        total += noop(i)
    futures = [noop.submit(i) for i in range(n // 2, n)]  # submitted: Pending first
    return total + sum(f.result() for f in futures)


def test_a_10000_task_flow_leaves_every_task_run_and_state_in_the_store(
    store: EmbeddedClient,
) -> None:
    assert many(N) == N * (N - 1) // 2
    (run,) = store.read_flow_runs()
    done = store.read_task_runs(
        TaskRunFilter(flow_run_ids=[run.id], state_types=[StateType.COMPLETED], limit=2 * N)
    )
    assert len(done) == N
    assert sorted(t.dynamic_key for t in done) == list(range(N))
    assert all(t.end_time is not None and t.run_count == 1 for t in done)
    with store.store.engine.connect() as conn:
        per_run = conn.execute(
            sa.select(task_run_states.c.task_run_id, sa.func.count())
            .join(task_runs, task_runs.c.id == task_run_states.c.task_run_id)
            .where(task_runs.c.flow_run_id == run.id)
            .group_by(task_run_states.c.task_run_id)
        ).all()
    counts = sorted(count for _, count in per_run)
    # Called task runs: Running, Completed; submitted ones: Pending, Running, Completed.
    assert counts == [2] * (N // 2) + [3] * (N // 2)
    sample = done[-1]
    names = [s.name for s in store.read_task_run_states(sample.id)]
    assert names in (["Running", "Completed"], ["Pending", "Running", "Completed"])


@pytest.mark.parametrize("enabled", [True, False])
def test_the_recorder_leaves_the_garbage_collector_as_it_found_it(
    store: EmbeddedClient, enabled: bool
) -> None:
    """The collector pauses during a batch write only; a disabled one stays disabled."""
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        assert many(200) == 199 * 100
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
