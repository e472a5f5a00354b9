"""``%nbflow load RUN [TASK ...]`` in a real kernel: a failed batch run's state, replayed.

The batch run is real (``nbflow run`` executes the notebook in its own kernel and fails
at ``report``); a second, fresh kernel loads what its task cells persisted.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.cli.conftest import NBFLOW
from tests.cli.test_runs_retry import REPAIRABLE

from .conftest import KernelRunner, outputs_text

pytestmark = pytest.mark.slow


def _failed_batch_run(kernel: KernelRunner, cells: list[str] = REPAIRABLE) -> str:
    """Run ``cells`` as a batch (``nbflow run``); it fails at ``report``; return its id."""
    path = kernel.notebook(cells, "batch.ipynb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW")}
    env["NBFLOW_HOME"] = str(kernel.home)
    proc = subprocess.run(
        [str(NBFLOW), "run", path.name],
        cwd=kernel.tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    match = re.search(r"run id:\s+(\S+)", proc.stdout)
    assert match, proc.stdout
    return match.group(1)


def test_load_puts_a_runs_task_outputs_into_the_namespace(kernel: KernelRunner) -> None:
    run_id = _failed_batch_run(kernel)
    assert (kernel.tmp / "extract.count").read_text() == "x"
    path = kernel.notebook(
        [
            "%load_ext nbflow",
            f"%nbflow load {run_id}",
            "print('rows', rows, 'doubled', doubled, 'total' in globals())",
            "del rows, doubled",
            f"%nbflow load {run_id[:8]} double nosuch",
            "print('rows' in globals(), doubled)",
            "%nbflow load",
        ],
        "debug.ipynb",
    )
    nb = kernel.run(path, allow_errors=True)

    everything = outputs_text(nb.cells[1])
    assert f"flow run {run_id}" in everything and "Failed" in everything
    assert re.search(r"loaded\s+extract\s+rows", everything), everything
    assert re.search(r"loaded\s+double\s+doubled", everything), everything
    assert re.search(r"skipped\s+report\s+it ended Failed", everything), everything
    assert "asked to fail" in everything
    assert "rows [1, 2, 3] doubled [2, 4, 6] False" in outputs_text(nb.cells[2])

    named = outputs_text(nb.cells[4])
    assert re.search(r"loaded\s+double\s+doubled", named), named
    assert "extract" not in named.split("nosuch")[0].split("double")[0]
    assert re.search(r"skipped\s+nosuch\s+no task of that name", named), named
    assert "its tasks: double, extract, report" in named
    assert "False [2, 4, 6]" in outputs_text(nb.cells[5])
    assert "%nbflow load RUN_ID" in outputs_text(nb.cells[6])
    # Loading replays nothing: the batch run's cells did not run again.
    assert (kernel.tmp / "extract.count").read_text() == "x"
    assert (kernel.tmp / "double.count").read_text() == "x"


def test_load_says_why_a_cell_has_nothing_to_load(kernel: KernelRunner) -> None:
    """An output that cannot be pickled: the cell's other outputs load, saying what is not."""
    cells = list(REPAIRABLE)
    cells[2] += "\nimport threading\nlock = threading.Lock()"
    run_id = _failed_batch_run(kernel, cells)
    debug = kernel.notebook(["%load_ext nbflow", f"%nbflow load {run_id}"], "debug.ipynb")
    text = outputs_text(kernel.run(debug).cells[1])
    assert re.search(r"loaded\s+extract\s+.*\brows\b", text), text
    assert "(not all: output 'lock' (lock) cannot be pickled" in text
    assert re.search(r"loaded\s+double\s+doubled", text), text
