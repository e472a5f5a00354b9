"""A failing ``%%task`` cell ends the run Failed; the next cell resumes it (real kernel)."""

from __future__ import annotations

import re
import time

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from nbflow.schemas import FlowRunFilter, TaskRunFilter
from nbflow.states import StateType

from .conftest import KernelRunner, outputs_text

pytestmark = pytest.mark.slow

NOTEBOOK = [
    "%load_ext nbflow",
    "%%flow resumable\nscale = 2",
    "%%task extract\nwith open('extract.txt', 'a') as fh:\n    fh.write('x')\n"
    "rows = [i * scale for i in range(4)]",
    "%%task\ntotal = sum(rows)",
    "%%task report\ndef check(value):\n    raise ValueError(f'report broke at {value}')\n"
    "check(total)\nsummary = f'total={total}'",
]
FIXED = "%%task report\nsummary = f'total={total}'\nprint(summary)"


def _tasks(kernel: KernelRunner, flow_run_id: object) -> dict[str, object]:
    runs = kernel.store.read_task_runs(TaskRunFilter(flow_run_ids=[flow_run_id]))  # type: ignore[list-item]
    return {t.name: t for t in runs}


def _written_tasks(kernel: KernelRunner, flow_run_id: object, name: str) -> dict[str, object]:
    """The run's task runs once ``name`` is among them (the recorder writes in batches)."""
    deadline = time.monotonic() + 30
    while name not in (tasks := _tasks(kernel, flow_run_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return tasks


def test_failure_ends_the_run_and_the_fixed_cell_resumes_it(kernel: KernelRunner) -> None:
    path = kernel.notebook(NOTEBOOK, "resumable.ipynb")
    nb = nbformat.read(path, as_version=4)
    client = kernel.client(nb, path)
    with client.setup_kernel(env=kernel.env(path)):
        for index in range(4):
            client.execute_cell(nb.cells[index], index)
        with pytest.raises(CellExecutionError):
            client.execute_cell(nb.cells[4], 4)
        # Failed at once, while the kernel lives on (no finish, no next cell).
        (failed,) = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["resumable"]))
        assert failed.state is not None and failed.state.type is StateType.FAILED
        assert "report" in (failed.state.message or "")
        assert failed.end_time is not None
        # The cell output shows the user's frames only.
        errors = [o for o in nb.cells[4].outputs if o["output_type"] == "error"]
        traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(errors[0]["traceback"]))
        assert "report broke" in traceback and "check(total)" in traceback
        assert "nbflow/" not in traceback and "task_engine" not in traceback

        nb.cells[4].source = FIXED
        client.execute_cell(nb.cells[4], 4)
        assert "total=12" in outputs_text(nb.cells[4])
        runs = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["resumable"]))
        (resumed,) = [r for r in runs if r.id != failed.id]
    assert (kernel.tmp / "extract.txt").read_text() == "x"  # the upstream cell ran once
    assert resumed.retry_of == failed.id
    assert resumed.mode == "interactive" and resumed.parameters == failed.parameters
    # Every task cell of the notebook now has a Completed or Cached run: the run completed.
    assert resumed.state is not None and resumed.state.type is StateType.COMPLETED
    before, after = _tasks(kernel, failed.id), _tasks(kernel, resumed.id)
    assert before["report"].state.name == "Failed"  # type: ignore[attr-defined]
    for name in ("extract", "cell:total"):
        restored = after[name].state  # type: ignore[attr-defined]
        assert restored.name == "Cached"
        assert restored.data["source_flow_run_id"] == str(failed.id)
        assert restored.data["source_task_run_id"] == str(before[name].id)  # type: ignore[attr-defined]
        assert str(failed.id) in restored.message
    assert after["report"].state.name == "Completed"  # type: ignore[attr-defined]
    # The fixed cell's upstream is the restored task run, so the DAG stays whole.
    assert after["report"].upstream == [after["cell:total"].id]  # type: ignore[attr-defined]
    logs = kernel.store.read_logs(failed.id).logs
    failure = "\n".join(r.message for r in logs if r.level >= 40)
    assert "report broke" in failure and "check(total)" in failure
    assert "nbflow/" not in failure


def test_changed_input_is_not_restored_and_the_cell_runs_again(kernel: KernelRunner) -> None:
    path = kernel.notebook(NOTEBOOK, "changed.ipynb")
    nb = nbformat.read(path, as_version=4)
    client = kernel.client(nb, path)
    with client.setup_kernel(env=kernel.env(path)):
        for index in range(4):
            client.execute_cell(nb.cells[index], index)
        with pytest.raises(CellExecutionError):
            client.execute_cell(nb.cells[4], 4)
        # A plain cell changes what `extract` read: it is not reused.
        nb.cells.append(nbformat.v4.new_code_cell("scale = 3"))
        client.execute_cell(nb.cells[5], 5)
        nb.cells[4].source = FIXED
        client.execute_cell(nb.cells[4], 4)
        runs = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["resumable"]))
        (failed,) = [r for r in runs if r.retry_of is None]
        (resumed,) = [r for r in runs if r.retry_of == failed.id]
        after = _written_tasks(kernel, resumed.id, "report")
        # `extract` read a changed value, and `cell:total` depends on it: neither is reused.
        assert "extract" not in after and "cell:total" not in after
        assert after["report"].state.name == "Completed"  # type: ignore[attr-defined]
        # `extract` has no Completed run in the resumed run yet: the run goes on.
        assert resumed.state is not None and resumed.state.type is StateType.RUNNING
        client.execute_cell(nb.cells[2], 2)
        client.execute_cell(nb.cells[3], 3)
        client.execute_cell(nb.cells[4], 4)
        resumed = kernel.store.read_flow_run(resumed.id)
    assert resumed.state is not None and resumed.state.type is StateType.COMPLETED
    assert (kernel.tmp / "extract.txt").read_text() == "xx"
