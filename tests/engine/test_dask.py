"""The Dask task runner on a real LocalCluster: worker-side runs are recorded."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import cloudpickle
import pytest

from nbflow import flow, get_run_logger, task
from nbflow.client.embedded import EmbeddedClient
from nbflow.engine.dask_runner import DaskTaskRunner
from nbflow.engine.task_runners import load_task_runner
from nbflow.schemas import FlowRunFilter, TaskRunFilter
from nbflow.states import StateType

distributed = pytest.importorskip("distributed")

# Workers are other processes that cannot import this test module: ship it by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0"
    ) as local:
        yield local


@task
def where(x: int) -> tuple[int, int]:
    get_run_logger().info("on a worker: %s", x)
    return x * 10, os.getpid()


@task(retries=1)
def fails_once_per_process(x: int) -> int:
    marker = f"_nbflow_seen_{x}"
    if not getattr(sys, marker, False):
        setattr(sys, marker, True)
        raise RuntimeError("first attempt fails")
    return x


@task
def boom() -> None:
    raise ValueError("worker boom")


@task
def after(value: object) -> object:
    return value


def test_tasks_run_on_workers_and_are_recorded(store: EmbeddedClient, cluster: object) -> None:
    @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))  # type: ignore[attr-defined]
    def on_dask() -> list[int]:
        results = [f.result() for f in where.map([1, 2, 3])]
        assert all(pid != os.getpid() for _, pid in results)
        chained = after.submit(where.submit(4))
        return [value for value, _ in results] + [chained.result()[0]]

    assert on_dask() == [10, 20, 30, 40]
    run = store.read_flow_runs(FlowRunFilter())[0]
    assert run.state is not None and run.state.type is StateType.COMPLETED
    trs = store.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))
    assert len(trs) == 5
    for tr in trs:
        names = [s.name for s in store.read_task_run_states(tr.id)]
        assert names == ["Pending", "Running", "Completed"], names
    messages = [log.message for log in store.read_logs(run.id).logs]
    assert {"on a worker: 1", "on a worker: 2", "on a worker: 3"} <= set(messages)


def test_worker_retries_failures_and_not_ready(store: EmbeddedClient, cluster: object) -> None:
    @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))  # type: ignore[attr-defined]
    def mixed() -> int:
        bad = boom.submit()
        after.submit(bad)
        return fails_once_per_process.submit(5).result()

    with pytest.raises(ValueError, match="worker boom"):
        mixed()
    run = store.read_flow_runs(FlowRunFilter())[0]
    assert run.state is not None and run.state.type is StateType.FAILED
    states = {t.name: t for t in store.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))}
    assert states["boom"].state.name == "Failed"  # type: ignore[union-attr]
    assert states["after"].state.name == "NotReady"  # type: ignore[union-attr]
    retried = states["fails_once_per_process"]
    assert retried.run_count == 2 and retried.state.name == "Completed"  # type: ignore[union-attr]


def test_entry_point_and_local_cluster_kwargs(store: EmbeddedClient) -> None:
    assert load_task_runner("dask") is DaskTaskRunner

    @flow(
        task_runner=DaskTaskRunner(
            cluster_kwargs={"n_workers": 1, "processes": False, "dashboard_address": ":0"}
        )
    )
    def own_cluster() -> int:
        return where.submit(2).result()[0]

    assert own_cluster() == 20
