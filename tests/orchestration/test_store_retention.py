"""Pruning old finished runs (store part and files), on SQLite and PostgreSQL.

Each test builds runs of known ages and states, prunes, and reads back every table and
file that belonged to them.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
import sqlalchemy as sa

from nbflow.engine.retention import is_own_output, prune_batch
from nbflow.exceptions import NbflowError
from nbflow.orchestration.store import Store
from nbflow.orchestration.store.tables import flow_runs
from nbflow.schemas import Artifact, FlowRunCreate, TaskRun
from nbflow.states import Completed, Failed, Pending, Scheduled, State, StateType, now
from tests.retention_world import MONTH, OLD, World


@pytest.fixture
def world(store: Store, tmp_path: Path) -> World:
    return World(store, tmp_path)


def test_prune_deletes_old_finished_runs_with_all_their_rows_and_files(world: World) -> None:
    old = world.run(end=Completed(), age=OLD)
    failed = world.run(end=Failed(), age=OLD)
    assert len(world.files(old)) == 3
    summary = world.prune()
    for run in (old, failed):
        assert set(world.rows(run.id).values()) == {0}
        assert world.files(run) == []
    c = summary.counts
    assert (c.runs, c.task_runs, c.logs, c.artifacts) == (2, 4, 2, 2)
    # Each run: Running + its end; each task run: one state.
    assert c.states == 2 * 2 + 4
    assert summary.files == 6
    assert "deleted 2 flow runs, 4 task runs" in summary.describe()


def test_prune_keeps_recent_open_and_scheduled_runs(world: World) -> None:
    recent = world.run(end=Completed(), age=timedelta(days=29))
    running = world.run(end=None, age=OLD)
    scheduled = world.store.create_flow_run(FlowRunCreate(flow_id=world.flow.id))
    world.age(scheduled.id, OLD)
    pending = world.store.create_flow_run(FlowRunCreate(flow_id=world.flow.id))
    world.store.set_flow_run_state(pending.id, Pending())
    world.age(pending.id, OLD)
    summary = world.prune()
    assert summary.counts.runs == 0
    for run in (recent, running, scheduled, pending):
        assert world.rows(run.id)["flow_runs"] == 1
    assert len(world.files(recent)) == 3
    assert len(world.files(running)) == 3


def test_prune_keeps_the_parent_of_an_open_child(world: World) -> None:
    parent = world.run(end=Completed(), age=OLD)
    world.run(end=None, parent=parent.id)
    done_parent = world.run(end=Completed(), age=OLD)
    world.run(end=Completed(), parent=done_parent.id)
    summary = world.prune()
    assert world.rows(parent.id)["flow_runs"] == 1
    assert world.rows(done_parent.id)["flow_runs"] == 0
    assert summary.counts.runs == 1


def test_prune_goes_in_batches_and_reports_each(world: World) -> None:
    runs = [world.run(end=Completed(), age=OLD, tasks=1) for _ in range(5)]
    seen: list[int] = []
    summary = world.prune(batch_size=2, on_batch=lambda s: seen.append(s.counts.runs))
    assert seen == [2, 4, 5]
    assert summary.batches == 3 and summary.counts.runs == 5 and not summary.more
    assert all(world.rows(r.id)["flow_runs"] == 0 for r in runs)


def test_one_batch_deletes_the_oldest_and_says_more_are_left(world: World) -> None:
    oldest = world.run(end=Completed(), age=OLD + timedelta(days=2), tasks=0)
    middle = world.run(end=Completed(), age=OLD + timedelta(days=1), tasks=0)
    newest = world.run(end=Completed(), age=OLD, tasks=0)
    first = prune_batch(world.store, older_than=MONTH, batch_size=2, home=world.home)
    assert first.more and first.counts.runs == 2
    assert world.rows(oldest.id)["flow_runs"] == world.rows(middle.id)["flow_runs"] == 0
    assert world.rows(newest.id)["flow_runs"] == 1
    second = prune_batch(world.store, older_than=MONTH, batch_size=2, home=world.home)
    assert not second.more and second.counts.runs == 1


def test_dry_run_counts_and_deletes_nothing(world: World) -> None:
    old = world.run(end=Completed(), age=OLD)
    world.run(end=Completed())
    summary = world.prune(dry_run=True)
    assert summary.dry_run and summary.files == 0
    assert (summary.counts.runs, summary.counts.task_runs, summary.counts.logs) == (1, 2, 1)
    assert world.rows(old.id)["flow_runs"] == 1 and len(world.files(old)) == 3
    assert summary.describe().startswith("would delete 1 flow run, 2 task runs")


def test_a_run_that_never_started_ages_from_its_creation(world: World) -> None:
    run = world.store.create_flow_run(FlowRunCreate(flow_id=world.flow.id))
    world.store.set_flow_run_state(run.id, State(type=StateType.CANCELLED))
    world.age(run.id, OLD)
    world.store.write_transaction(
        lambda c: c.execute(
            sa.update(flow_runs).where(flow_runs.c.id == run.id).values(end_time=None)
        )
    )
    assert world.prune().counts.runs == 1


def test_results_a_kept_run_reads_are_kept(world: World) -> None:
    # A valid cache entry written by an old run, and a repair of an old run that is kept.
    old = world.run(end=Completed(), age=OLD, tasks=0)
    cached = TaskRun(flow_run_id=old.id, name="c", task_key="c", cache_key="k1")
    cached.state = Completed(data={"result_key": "k1"})
    expired = TaskRun(
        flow_run_id=old.id,
        name="e",
        task_key="e",
        cache_key="k2",
        cache_expiration=now() - timedelta(days=1),
    )
    expired.state = Completed(data={"result_key": "k2"})
    world.store.write_task_runs([cached, expired], [])
    world.results.write("k1", 1)
    world.results.write("k2", 2)
    failed = world.run(end=Failed(), age=OLD, tasks=1)
    failed_key = str(world.store.read_task_runs()[-1].id)
    repair = world.store.create_flow_run(
        FlowRunCreate(
            flow_id=world.flow.id,
            retry_of=failed.id,
            state=Scheduled(data={"repair": {"tasks": [{"result_key": failed_key}]}}),
        )
    )
    world.prune()
    assert world.rows(old.id)["flow_runs"] == world.rows(failed.id)["flow_runs"] == 0
    assert world.results.read("k1") is not None  # still a valid cache entry
    assert world.results.read("k2") is None  # expired, read by no kept run
    assert world.results.read(failed_key) is not None  # the kept repair restores it
    assert world.rows(repair.id)["flow_runs"] == 1


def test_only_outputs_nbflow_wrote_are_deleted(world: World, tmp_path: Path) -> None:
    mine = tmp_path / "mine.ipynb"
    mine.write_text("{}")
    run = world.run(end=Completed(), age=OLD, tasks=0)
    world.store.update_flow_run(run.id, output_path=str(mine))
    outside = tmp_path / "elsewhere" / f"{run.id}.ipynb"
    outside.parent.mkdir()
    outside.write_text("{}")
    world.store.create_artifact(
        Artifact(flow_run_id=run.id, key="output-notebook", kind="notebook", uri=str(outside))
    )
    world.prune()
    assert mine.exists() and outside.exists()
    assert not (world.home / "outputs" / "report" / f"{run.id}.ipynb").exists()


@pytest.mark.parametrize(
    "location, expected",
    [
        ("{home}/outputs/flow/{id}.ipynb", True),
        ("file://{home}/outputs/flow/{id}.ipynb", True),
        ("{home}/outputs/flow/other.ipynb", False),
        ("{home}/outputs/{id}.ipynb", False),
        ("{home}/outputs/flow/../../{id}.ipynb", False),
        ("{home}/elsewhere/flow/{id}.ipynb", False),
        ("s3://bucket/outputs/flow/{id}.ipynb", False),
    ],
)
def test_is_own_output(tmp_path: Path, location: str, expected: bool) -> None:
    run_id = uuid4()
    text = location.format(home=tmp_path, id=run_id)
    assert is_own_output(text, run_id, tmp_path) is expected


@pytest.mark.parametrize(
    "kwargs, problem",
    [({"older_than": timedelta(0)}, "older_than"), ({"batch_size": 0}, "batch_size")],
)
def test_bad_arguments_name_the_field(world: World, kwargs: dict, problem: str) -> None:
    args = {"older_than": MONTH, "batch_size": 10, **kwargs}
    with pytest.raises(NbflowError, match=problem):
        prune_batch(world.store, home=world.home, **args)
