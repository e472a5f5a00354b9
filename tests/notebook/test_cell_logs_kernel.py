"""A ``%%task`` cell's output becomes log records of its task run (real kernel)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from nbflow.notebook.cell_logs import MAX_RECORD_CHARS
from nbflow.schemas import FlowRunFilter, TaskRunFilter

from .conftest import KernelRunner, outputs_text

pytestmark = pytest.mark.slow


def test_stdout_stderr_and_results_are_logged_under_the_task_run(kernel: KernelRunner) -> None:
    path = kernel.notebook(
        [
            "%load_ext nbflow",
            "%load_ext nbflow",
            "%%flow logged\nn = 3",
            "%%task fetch\nimport sys\nprint(f'fetched {n * 47 - 1} rows')\n"
            "print('careful: 2 rows skipped', file=sys.stderr)\nrows = list(range(n))\nrows",
            "%%task big\nprint('x' * 50_000)",
            "print('not a task cell')",
            "%nbflow finish",
            "%nbflow finish",
        ]
    )
    nb = kernel.run(path)
    assert outputs_text(nb.cells[1]) == ""  # loading nbflow again is silent
    assert "fetched 140 rows" in outputs_text(nb.cells[3])  # the cell still shows it
    assert "nothing to finish" in outputs_text(nb.cells[7])
    (run,) = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["logged"]))
    tasks = {t.name: t for t in kernel.store.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))}
    logs = kernel.store.read_logs(run.id).logs
    fetch = [(r.level, r.logger, r.message) for r in logs if r.task_run_id == tasks["fetch"].id]
    assert (logging.INFO, "nbflow.cell.stdout", "fetched 140 rows") in fetch
    assert (logging.WARNING, "nbflow.cell.stderr", "careful: 2 rows skipped") in fetch
    assert (logging.INFO, "nbflow.cell.result", "[0, 1, 2]") in fetch
    (big,) = [r.message for r in logs if r.task_run_id == tasks["big"].id]
    assert big.startswith("x" * MAX_RECORD_CHARS)
    assert big.endswith("(40000 more characters not logged)")
    # Output of plain cells and nbflow's own chatter are not run logs.
    assert not any("not a task cell" in r.message for r in logs)
    assert not any("already loaded" in r.message for r in logs)


def test_task_cell_output_is_logged_in_a_batch_run(kernel: KernelRunner) -> None:
    path = kernel.notebook(
        [
            "%load_ext nbflow",
            "%%flow batch_logged\nn = 3",
            "%%task fetch\nprint(f'fetched {n * 47 - 1} rows')\nrows = list(range(n))",
            "%%task report\nlen(rows)",
        ],
        "batch_logged.ipynb",
    )
    done = subprocess.run(
        [sys.executable, "-m", "nbflow", "run", str(path), "-q"],
        env=kernel.env(path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["batch_logged"]))
    tasks = {t.name: t for t in kernel.store.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))}
    logs = kernel.store.read_logs(run.id).logs
    by_task = {(r.task_run_id, r.logger, r.message) for r in logs}
    assert (tasks["fetch"].id, "nbflow.cell.stdout", "fetched 140 rows") in by_task
    assert (tasks["report"].id, "nbflow.cell.result", "3") in by_task
    assert not any("already loaded" in r.message for r in logs)
