"""A notebook of notebooks run cell by cell in a live kernel (the interactive path)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nbflow.schemas import FlowRunFilter, TaskRunFilter
from nbflow.states import StateType
from tests.notebook.conftest import KernelRunner, kernel, outputs_text

__all__ = ["kernel"]

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline"


def test_pipeline_in_a_live_kernel(kernel: KernelRunner) -> None:
    for name in ("pipeline.ipynb", "sales.ipynb", "report.ipynb"):
        shutil.copy(EXAMPLE / name, kernel.tmp / name)
    nb = kernel.run(kernel.tmp / "pipeline.ipynb")
    assert "{'EU': 245, 'US': 450}" in outputs_text(nb.cells[3])
    assert "grand total 695" in outputs_text(nb.cells[4])
    store = kernel.store
    (parent,) = store.read_flow_runs(FlowRunFilter(flow_names=["sales_pipeline"]))
    assert parent.mode == "interactive"
    tasks = {t.id: t.name for t in store.read_task_runs(TaskRunFilter(flow_run_ids=[parent.id]))}
    children = store.read_flow_runs(FlowRunFilter(parent_flow_run_ids=[parent.id]))
    called_by = sorted(tasks[c.parent_task_run_id] for c in children if c.parent_task_run_id)
    assert called_by == ["fan_out", "fan_out", "report"]
    assert all(c.state is not None and c.state.type is StateType.COMPLETED for c in children)
    assert all(c.mode == "batch" for c in children)
