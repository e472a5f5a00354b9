"""``nbflow runs prune --older-than AGE``: on the embedded store and through a server.

The store is seeded with runs of known ages (:class:`tests.retention_world.World`), and
one test prunes a run ``nbflow run`` really executed, with its output notebook and the
task outputs it persisted.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from uuid import UUID

import pytest
import sqlalchemy as sa

from nbflow.orchestration.store import Store
from nbflow.orchestration.store.tables import flow_runs, task_runs
from nbflow.states import Completed
from tests.cli.conftest import NBFLOW, Runner
from tests.cli.test_deploy import write_notebook
from tests.cli.test_runs_retry import run_id_of
from tests.live_server import LiveServer
from tests.retention_world import OLD, World


def _world(home: Path, tmp_path: Path) -> World:
    return World(Store.from_url(f"sqlite:///{home / 'nbflow.db'}"), tmp_path, home=home)


def test_prune_deletes_old_runs_in_batches_with_progress(
    nbflow: Runner, nbflow_home: Path, tmp_path: Path
) -> None:
    world = _world(nbflow_home, tmp_path)
    old = [world.run(end=Completed(), age=OLD, tasks=1) for _ in range(5)]
    recent = world.run(end=Completed(), tasks=1)
    running = world.run(end=None, age=OLD, tasks=1)

    result = nbflow("runs", "prune", "--older-than", "30d", "--batch-size", "2", "--yes")
    assert result.code == 0, result.out + result.err
    lines = result.out.splitlines()
    assert "would delete 5 flow runs, 5 task runs" in lines[0]
    assert [line.strip() for line in lines[1:4]] == [
        "2/5 flow runs deleted",
        "4/5 flow runs deleted",
        "5/5 flow runs deleted",
    ]
    assert lines[-1].startswith("deleted 5 flow runs, 5 task runs, 15 states, 5 log records")
    assert lines[-1].endswith("5 artifacts and 10 files")
    assert all(set(world.rows(r.id).values()) == {0} and world.files(r) == [] for r in old)
    for kept in (recent, running):
        assert world.rows(kept.id)["flow_runs"] == 1 and len(world.files(kept)) == 2


def test_dry_run_deletes_nothing(nbflow: Runner, nbflow_home: Path, tmp_path: Path) -> None:
    world = _world(nbflow_home, tmp_path)
    old = world.run(end=Completed(), age=OLD)
    result = nbflow("runs", "prune", "--older-than", "720h", "--dry-run")
    assert result.code == 0, result.err
    assert "would delete 1 flow runs, 2 task runs" in result.out
    assert "deleted" not in result.out.replace("would delete", "")
    assert world.rows(old.id)["flow_runs"] == 1 and len(world.files(old)) == 3


@pytest.mark.parametrize("age", ["30", "30x", "thirty days", "0d", "-5d", "1.5w", ""])
def test_bad_durations_are_refused_naming_the_value_and_the_fix(nbflow: Runner, age: str) -> None:
    result = nbflow("runs", "prune", f"--older-than={age}", "--yes")
    assert result.code == 2
    assert f"--older-than {age!r} is not a positive duration" in result.err
    assert "30d (days), 12h (hours) or 90m (minutes)" in result.err


def test_bad_batch_sizes_are_refused(nbflow: Runner) -> None:
    result = nbflow("runs", "prune", "--older-than", "30d", "--batch-size", "0")
    assert result.code == 2
    assert "'0' is not a whole number from 1 to 10000" in result.err


def test_without_a_terminal_it_asks_for_yes(nbflow_home: Path, tmp_path: Path) -> None:
    world = _world(nbflow_home, tmp_path)
    old = world.run(end=Completed(), age=OLD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW_")}
    env["NBFLOW_HOME"] = str(nbflow_home)
    proc = subprocess.run(
        [str(NBFLOW), "runs", "prune", "--older-than", "90m"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "pass --yes" in proc.stderr
    assert world.rows(old.id)["flow_runs"] == 1


def test_a_real_notebook_run_goes_with_its_output_and_results(
    nbflow: Runner, nbflow_home: Path, tmp_path: Path
) -> None:
    write_notebook(
        tmp_path / "kept.ipynb",
        ["%%flow prune_demo\nn: int = 3", "%%task square\nsquares = [i * i for i in range(n)]"],
    )
    ran = nbflow("run", "kept.ipynb")
    assert ran.code == 0, ran.out + ran.err
    run_id = run_id_of(ran)
    store = Store.from_url(f"sqlite:///{nbflow_home / 'nbflow.db'}")
    try:
        run = store.read_flow_run(UUID(run_id))
        [task] = store.read_task_runs()
        assert task.state is not None
        result_key = (task.state.data or {}).get("result_key")
        assert result_key, task.state
        result_file = nbflow_home / "results" / str(result_key)
        output = Path(run.output_path or "")
        assert result_file.is_file() and output.is_file()
        World(store, tmp_path, home=nbflow_home).age(run.id, OLD)
        pruned = nbflow("runs", "prune", "--older-than", "30d", "--yes")
        assert pruned.code == 0, pruned.out + pruned.err
        assert "deleted 1 flow runs, 1 task runs" in pruned.out
        assert not result_file.exists() and not output.exists()
        left = store.read_transaction(
            lambda c: [
                c.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in (flow_runs, task_runs)
            ]
        )
        assert left == [0, 0]
    finally:
        store.close()


def test_prune_through_a_server_deletes_on_the_server(nbflow: Runner, tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "s", db_url=f"sqlite:///{tmp_path / 'server.db'}")
    store = Store.from_url(server.db_url or "")
    try:
        world = World(store, tmp_path, home=server.home)
        old = [world.run(end=Completed(), age=OLD) for _ in range(3)]
        recent = world.run(end=Completed())
        with server:
            env = server.env
            proc = subprocess.run(
                [str(NBFLOW), "runs", "prune", "--older-than", "30d", "--batch-size", "2", "-y"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"server {server.api_url}: would delete 3 flow runs" in proc.stdout
        assert "3/3 flow runs deleted" in proc.stdout
        assert all(set(world.rows(r.id).values()) == {0} and world.files(r) == [] for r in old)
        assert world.rows(recent.id)["flow_runs"] == 1 and len(world.files(recent)) == 3
    finally:
        store.close()
