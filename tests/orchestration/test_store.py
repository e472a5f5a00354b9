"""CRUD, filters and pagination of every object in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from nbflow.client.embedded import EmbeddedClient
from nbflow.exceptions import FlowRunNotFound, NotFound, ObjectAlreadyExists, ValidationError
from nbflow.orchestration.store import Store
from nbflow.schemas import (
    Artifact,
    DeploymentCreate,
    Flow,
    FlowRunCreate,
    FlowRunFilter,
    Log,
    Schedule,
    TaskRun,
    TaskRunFilter,
)
from nbflow.states import Completed, Pending, Running, Scheduled, StateType, now


def make_flow(store: Store, name: str = "sales") -> Flow:
    return store.create_flow(Flow(name=name, parameters_schema={"properties": {"x": {}}}))


def test_flow_create_is_an_upsert_by_name(store: Store) -> None:
    first = make_flow(store)
    again = store.create_flow(Flow(name="sales", description="new", tags=["a"]))
    assert again.id == first.id
    assert again.description == "new" and again.tags == ["a"]
    assert store.read_flow(first.id) == again
    assert store.read_flow_by_name("sales") == again
    assert again.created.tzinfo is UTC


def test_flow_id_under_another_name_is_refused(store: Store) -> None:
    first = make_flow(store)
    with pytest.raises(ObjectAlreadyExists, match="another name"):
        store.create_flow(Flow(id=first.id, name="renamed"))


def test_flows_are_listed_by_name_with_pagination(store: Store) -> None:
    for name in ["c", "a", "b", "d"]:
        make_flow(store, name)
    assert [f.name for f in store.read_flows()] == ["a", "b", "c", "d"]
    assert [f.name for f in store.read_flows(limit=2, offset=1)] == ["b", "c"]


def test_missing_flow_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="flow"):
        store.read_flow_by_name("nope")
    with pytest.raises(NotFound):
        store.read_flow(Flow(name="x").id)


def test_deployment_roundtrip_with_schedules(store: Store) -> None:
    flow = make_flow(store)
    anchor = datetime(2026, 1, 1, 6, tzinfo=UTC)
    created = store.create_deployment(
        DeploymentCreate(
            flow_id=flow.id,
            name="daily",
            job_variables={"image": "python:3.11"},
            parameters={"region": "EU"},
            schedules=[
                Schedule(cron="0 6 * * *", timezone="Europe/Berlin"),
                Schedule(interval_seconds=3600, anchor_date=anchor),
            ],
            notebook={"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {}},
            notebook_path="sales.ipynb",
            concurrency_limit=2,
        )
    )
    read = store.read_deployment(created.id)
    assert read == created
    assert [s.cron for s in read.schedules] == ["0 6 * * *", None]
    assert read.schedules[1].anchor_date == anchor
    assert read.notebook is not None and read.notebook["nbformat"] == 4


def test_deployment_create_updates_same_flow_and_name(store: Store) -> None:
    flow = make_flow(store)
    first = store.create_deployment(
        DeploymentCreate(flow_id=flow.id, name="d", schedules=[Schedule(cron="* * * * *")])
    )
    second = store.create_deployment(
        DeploymentCreate(flow_id=flow.id, name="d", runner="docker", parameters={"a": 1})
    )
    assert second.id == first.id and second.created == first.created
    assert second.runner == "docker" and second.schedules == []
    assert len(store.read_deployments(flow_id=flow.id)) == 1


def test_deployment_needs_an_existing_flow(store: Store) -> None:
    with pytest.raises(NotFound, match="flow"):
        store.create_deployment(DeploymentCreate(flow_id=Flow(name="x").id, name="d"))


def test_update_deployment(store: Store) -> None:
    flow = make_flow(store)
    dep = store.create_deployment(DeploymentCreate(flow_id=flow.id, name="d"))
    updated = store.update_deployment(
        dep.id, paused=True, schedules=[Schedule(interval_seconds=60)], parameters={"x": 2}
    )
    assert updated.paused and updated.parameters == {"x": 2}
    assert updated.schedules[0].interval_seconds == 60
    assert store.read_deployment(dep.id) == updated
    with pytest.raises(ValidationError, match="concurrency_limit"):
        store.update_deployment(dep.id, concurrency_limit=0)
    with pytest.raises(ValidationError, match="bogus"):
        store.update_deployment(dep.id, bogus=1)
    with pytest.raises(NotFound):
        store.update_deployment(flow.id, paused=False)


def test_update_deployment_to_a_taken_name_fails(store: Store) -> None:
    flow = make_flow(store)
    store.create_deployment(DeploymentCreate(flow_id=flow.id, name="a"))
    b = store.create_deployment(DeploymentCreate(flow_id=flow.id, name="b"))
    with pytest.raises(ObjectAlreadyExists):
        store.update_deployment(b.id, name="a")


def test_read_deployments_filters_and_pages(store: Store) -> None:
    f1, f2 = make_flow(store, "one"), make_flow(store, "two")
    for name in ["x", "y", "z"]:
        store.create_deployment(DeploymentCreate(flow_id=f1.id, name=name))
    store.create_deployment(DeploymentCreate(flow_id=f2.id, name="w"))
    assert [d.name for d in store.read_deployments()] == ["w", "x", "y", "z"]
    assert [d.name for d in store.read_deployments(flow_id=f1.id, offset=1)] == ["y", "z"]
    assert [d.name for d in store.read_deployments(limit=1)] == ["w"]


def test_delete_deployment_removes_its_scheduled_runs_only(store: Store) -> None:
    flow = make_flow(store)
    dep = store.create_deployment(DeploymentCreate(flow_id=flow.id, name="d"))
    later = now() + timedelta(hours=1)
    future = store.create_flow_run(
        FlowRunCreate(flow_id=flow.id, deployment_id=dep.id, state=Scheduled(later))
    )
    done = store.create_flow_run(FlowRunCreate(flow_id=flow.id, deployment_id=dep.id))
    store.set_flow_run_state(done.id, Running())
    store.set_flow_run_state(done.id, Completed())
    store.delete_deployment(dep.id)
    with pytest.raises(NotFound):
        store.read_deployment(dep.id)
    with pytest.raises(FlowRunNotFound):
        store.read_flow_run(future.id)
    kept = store.read_flow_run(done.id)
    assert kept.deployment_id is None and kept.state is not None and kept.state.is_terminal
    with pytest.raises(NotFound):
        store.delete_deployment(dep.id)


def test_create_flow_run_defaults(store: Store) -> None:
    flow = make_flow(store)
    before = now()
    run = store.create_flow_run(FlowRunCreate(flow_id=flow.id, parameters={"x": 1}))
    assert run.name and "-" in run.name
    assert run.flow_name == "sales"
    assert run.state is not None and run.state.is_named(StateType.SCHEDULED, "Scheduled")
    assert run.expected_start_time is not None and run.expected_start_time >= before
    assert run.expected_start_time.tzinfo is UTC
    assert store.read_flow_run(run.id) == run
    assert [s.id for s in store.read_flow_run_states(run.id)] == [run.state.id]


def test_create_flow_run_stores_what_it_is_given(store: Store) -> None:
    # The lifecycle merges a deployment's defaults (tests/orchestration/test_lifecycle.py).
    flow = make_flow(store)
    dep = store.create_deployment(
        DeploymentCreate(
            flow_id=flow.id,
            name="d",
            runner="docker",
            parameters={"region": "EU", "day": "1"},
            notebook_path="n.ipynb",
        )
    )
    at = datetime(2030, 5, 1, 12, tzinfo=UTC)
    run = store.create_flow_run(
        FlowRunCreate(
            flow_id=flow.id,
            deployment_id=dep.id,
            name="mine",
            parameters={"day": "2"},
            state=Scheduled(at),
        )
    )
    assert run.name == "mine" and run.expected_start_time == at
    assert run.parameters == {"day": "2"}
    assert run.runner is None and run.notebook_path is None


def test_create_flow_run_in_running_state_does_the_bookkeeping(store: Store) -> None:
    flow = make_flow(store)
    run = store.create_flow_run(FlowRunCreate(flow_id=flow.id, state=Running(), mode="interactive"))
    assert run.run_count == 1 and run.start_time is not None and run.mode == "interactive"
    assert store.read_flow_run(run.id) == run


def test_create_flow_run_needs_flow_and_deployment(store: Store) -> None:
    flow = make_flow(store)
    with pytest.raises(NotFound, match="flow"):
        store.create_flow_run(FlowRunCreate(flow_id=Flow(name="x").id))
    with pytest.raises(NotFound, match="deployment"):
        store.create_flow_run(FlowRunCreate(flow_id=flow.id, deployment_id=flow.id))


def test_idempotency_key_returns_the_existing_run(store: Store) -> None:
    flow = make_flow(store)
    dep = store.create_deployment(DeploymentCreate(flow_id=flow.id, name="d"))
    key = "scheduled:2030-01-01T06:00:00+00:00"
    first = store.create_flow_run(
        FlowRunCreate(flow_id=flow.id, deployment_id=dep.id, idempotency_key=key)
    )
    again = store.create_flow_run(
        FlowRunCreate(flow_id=flow.id, deployment_id=dep.id, idempotency_key=key)
    )
    assert again.id == first.id
    other = store.create_deployment(DeploymentCreate(flow_id=flow.id, name="other"))
    third = store.create_flow_run(
        FlowRunCreate(flow_id=flow.id, deployment_id=other.id, idempotency_key=key)
    )
    assert third.id != first.id
    adhoc = store.create_flow_run(FlowRunCreate(flow_id=flow.id, idempotency_key=key))
    assert store.create_flow_run(FlowRunCreate(flow_id=flow.id, idempotency_key=key)) == adhoc
    assert store.count_flow_runs() == 3


def test_flow_run_filters_sorting_and_pagination(store: Store) -> None:
    a, b = make_flow(store, "a"), make_flow(store, "b")
    dep = store.create_deployment(DeploymentCreate(flow_id=b.id, name="d"))
    base = datetime(2030, 1, 1, tzinfo=UTC)
    runs = [
        store.create_flow_run(
            FlowRunCreate(flow_id=a.id, state=Scheduled(base + timedelta(hours=i)))
        )
        for i in range(5)
    ]
    dep_run = store.create_flow_run(
        FlowRunCreate(flow_id=b.id, deployment_id=dep.id, state=Scheduled(base - timedelta(days=1)))
    )
    store.set_flow_run_state(runs[0].id, Pending())
    store.set_flow_run_state(runs[1].id, Running(), force=True)

    def names(f: FlowRunFilter) -> list[str]:
        return [r.name for r in store.read_flow_runs(f)]

    everything = store.read_flow_runs()
    assert [r.id for r in everything] == [r.id for r in [dep_run, *reversed(runs)]]
    assert store.count_flow_runs() == 6
    pending = FlowRunFilter(state_types=[StateType.PENDING])
    assert [r.id for r in store.read_flow_runs(pending)] == [runs[0].id]
    assert store.count_flow_runs(FlowRunFilter(state_names=["Running"])) == 1
    assert store.count_flow_runs(FlowRunFilter(flow_ids=[b.id])) == 1
    assert store.count_flow_runs(FlowRunFilter(flow_names=["a"])) == 5
    assert store.count_flow_runs(FlowRunFilter(deployment_ids=[dep.id])) == 1
    window = FlowRunFilter(
        start_after=base + timedelta(hours=1),
        start_before=base + timedelta(hours=3),
        sort="expected_start_asc",
    )
    assert [r.id for r in store.read_flow_runs(window)] == [r.id for r in runs[1:4]]
    by_start = FlowRunFilter(sort="expected_start_asc", limit=2, offset=1)
    assert [r.id for r in store.read_flow_runs(by_start)] == [runs[0].id, runs[1].id]
    assert store.count_flow_runs(by_start) == 6
    assert names(FlowRunFilter(state_types=[StateType.CRASHED])) == []


def test_update_flow_run(store: Store) -> None:
    flow = make_flow(store)
    run = store.create_flow_run(FlowRunCreate(flow_id=flow.id))
    updated = store.update_flow_run(
        run.id, infrastructure_id="container-1", output_path="/out.ipynb", tags=["x"]
    )
    assert updated.infrastructure_id == "container-1" and updated.tags == ["x"]
    assert updated.updated > run.updated
    assert store.read_flow_run(run.id) == updated
    with pytest.raises(ValidationError, match="state"):
        store.update_flow_run(run.id, state=Completed())
    with pytest.raises(ValidationError, match="tags"):
        store.update_flow_run(run.id, tags="not-a-list")
    with pytest.raises(FlowRunNotFound):
        store.update_flow_run(flow.id, name="x")


def test_heartbeat(store: Store) -> None:
    flow = make_flow(store)
    run = store.create_flow_run(FlowRunCreate(flow_id=flow.id))
    assert run.heartbeat is None
    store.heartbeat(run.id)
    beat = store.read_flow_run(run.id).heartbeat
    assert beat is not None and beat.tzinfo is UTC and beat >= run.created
    with pytest.raises(FlowRunNotFound):
        store.heartbeat(flow.id)


def test_delete_flow_run_removes_everything_of_it(store: Store) -> None:
    flow = make_flow(store)
    run = store.create_flow_run(FlowRunCreate(flow_id=flow.id))
    other = store.create_flow_run(FlowRunCreate(flow_id=flow.id))
    task = TaskRun(flow_run_id=run.id, name="t", task_key="t", state=Completed())
    store.write_task_runs([task], [(task.id, task.state)])  # type: ignore[list-item]
    store.write_logs(
        [Log(flow_run_id=run.id, message="hi"), Log(flow_run_id=other.id, message="x")]
    )
    store.create_artifact(Artifact(flow_run_id=run.id, key="out"))
    store.delete_flow_run(run.id)
    with pytest.raises(FlowRunNotFound):
        store.read_flow_run(run.id)
    with pytest.raises(FlowRunNotFound):
        store.read_flow_run_states(run.id)
    assert store.read_task_runs() == []
    with pytest.raises(NotFound):
        store.read_task_run_states(task.id)
    assert store.read_artifacts(key="out") == []
    assert store.read_logs(run.id) == ([], 0)
    assert len(store.read_logs(other.id)[0]) == 1
    with pytest.raises(FlowRunNotFound):
        store.delete_flow_run(run.id)


def test_task_runs_upsert_latest_snapshot_and_history(store: Store) -> None:
    flow = make_flow(store)
    run = store.create_flow_run(FlowRunCreate(flow_id=flow.id))
    task = TaskRun(flow_run_id=run.id, name="extract", task_key="extract", inputs=["a"])
    pending, running, done = Pending(), Running(), Completed()
    store.write_task_runs([task.model_copy(update={"state": pending})], [(task.id, pending)])
    later = now()
    snapshot = task.model_copy(
        update={
            "state": done,
            "run_count": 1,
            "start_time": later,
            "end_time": later,
            "updated": later,
        }
    )
    store.write_task_runs([snapshot], [(task.id, running), (task.id, done)])
    # A replayed batch adds no history; an older snapshot arriving late does not win.
    store.write_task_runs([snapshot], [(task.id, running), (task.id, done)])
    store.write_task_runs([task.model_copy(update={"state": pending})], [])
    (stored,) = store.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))
    assert stored == snapshot
    assert [s.id for s in store.read_task_run_states(task.id)] == [pending.id, running.id, done.id]


def test_task_run_filters(store: Store) -> None:
    flow = make_flow(store)
    r1 = store.create_flow_run(FlowRunCreate(flow_id=flow.id))
    r2 = store.create_flow_run(FlowRunCreate(flow_id=flow.id))
    tasks = [
        TaskRun(flow_run_id=r, name=f"t{i}", task_key="t", dynamic_key=i, state=s)
        for i, (r, s) in enumerate([(r1.id, Completed()), (r1.id, Running()), (r2.id, Completed())])
    ]
    store.write_task_runs(tasks)
    assert [t.name for t in store.read_task_runs()] == ["t0", "t1", "t2"]
    assert len(store.read_task_runs(TaskRunFilter(flow_run_ids=[r1.id]))) == 2
    done = TaskRunFilter(state_types=[StateType.COMPLETED], limit=1, offset=1)
    assert [t.name for t in store.read_task_runs(done)] == ["t2"]


def test_task_runs_of_a_missing_flow_run_are_refused(store: Store) -> None:
    ghost = Flow(name="x").id
    with pytest.raises(FlowRunNotFound):
        store.write_task_runs([TaskRun(flow_run_id=ghost, name="t", task_key="t")])


def test_large_task_run_batch(store: Store) -> None:
    flow = make_flow(store)
    run = store.create_flow_run(FlowRunCreate(flow_id=flow.id))
    tasks, states = [], []
    for i in range(2000):
        p, r, c = Pending(), Running(), Completed()
        tasks.append(TaskRun(flow_run_id=run.id, name="t", task_key=f"t{i}", state=c))
        states += [(tasks[-1].id, p), (tasks[-1].id, r), (tasks[-1].id, c)]
    store.write_task_runs(tasks, states)
    assert len(store.read_task_runs(TaskRunFilter(flow_run_ids=[run.id], limit=5000))) == 2000
    assert [s.type for s in store.read_task_run_states(tasks[-1].id)] == [
        StateType.PENDING,
        StateType.RUNNING,
        StateType.COMPLETED,
    ]


def test_logs_page_with_a_cursor(store: Store) -> None:
    flow = make_flow(store)
    run = store.create_flow_run(FlowRunCreate(flow_id=flow.id))
    other = store.create_flow_run(FlowRunCreate(flow_id=flow.id))
    task = TaskRun(flow_run_id=run.id, name="t", task_key="t")
    store.write_logs([Log(flow_run_id=run.id, message=f"m{i}") for i in range(5)])
    store.write_logs([Log(flow_run_id=other.id, message="elsewhere")])
    store.write_logs(
        [Log(flow_run_id=run.id, task_run_id=task.id, message=f"m{i}") for i in range(5, 7)]
    )
    page, cursor = store.read_logs(run.id, limit=3)
    assert [entry.message for entry in page] == ["m0", "m1", "m2"]
    page, cursor = store.read_logs(run.id, cursor=cursor, limit=3)
    assert [entry.message for entry in page] == ["m3", "m4", "m5"]
    page, cursor = store.read_logs(run.id, cursor=cursor)
    assert [entry.message for entry in page] == ["m6"]
    assert store.read_logs(run.id, cursor=cursor) == ([], cursor)
    by_task, _ = store.read_logs(run.id, task_run_id=task.id)
    assert [entry.message for entry in by_task] == ["m5", "m6"]
    assert by_task[0].timestamp.tzinfo is UTC
    with pytest.raises(FlowRunNotFound):
        store.write_logs([Log(flow_run_id=flow.id, message="ghost")])


def test_artifacts(store: Store) -> None:
    flow = make_flow(store)
    run = store.create_flow_run(FlowRunCreate(flow_id=flow.id))
    nb = store.create_artifact(
        Artifact(flow_run_id=run.id, key="output", kind="notebook", uri="/tmp/out.ipynb")
    )
    res = store.create_artifact(Artifact(flow_run_id=run.id, key="result", data={"rows": 3}))
    free = store.create_artifact(Artifact(key="result", data={"rows": 4}))
    assert store.read_artifacts(flow_run_id=run.id) == [nb, res]
    assert store.read_artifacts(key="result") == [res, free]
    assert store.read_artifacts(flow_run_id=run.id, key="output") == [nb]
    with pytest.raises(ObjectAlreadyExists):
        store.create_artifact(nb)


def test_embedded_client_speaks_the_client_interface(store_url: str) -> None:
    with EmbeddedClient.from_url(store_url) as client:
        flow = client.create_flow(Flow(name="f"))
        run = client.create_flow_run(FlowRunCreate(flow_id=flow.id))
        client.write_logs([Log(flow_run_id=run.id, message="hello")])
        page = client.read_logs(run.id)
        assert [entry.message for entry in page.logs] == ["hello"] and page.cursor > 0
        assert client.set_flow_run_state(run.id, Pending()).status == "ACCEPT"
        assert client.read_flow_run(run.id).state_type is StateType.PENDING


def test_import_nbflow_does_not_import_sqlalchemy() -> None:
    code = "import sys, nbflow, nbflow.client; assert 'sqlalchemy' not in sys.modules, 'sqlalchemy'"
    subprocess.run([sys.executable, "-c", code], check=True)
