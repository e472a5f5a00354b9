"""The example notebooks run top to bottom in a real kernel and record what they claim."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nbflow.schemas import FlowRunFilter, TaskRunFilter
from nbflow.states import StateType

from .conftest import KernelRunner, outputs_text

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _copy(kernel: KernelRunner, name: str) -> Path:
    target = kernel.tmp / name
    shutil.copy(EXAMPLES / name, target)
    return target


def _task_states(kernel: KernelRunner, run_id: object) -> dict[str, str]:
    runs = kernel.store.read_task_runs(TaskRunFilter(flow_run_ids=[run_id]))  # type: ignore[list-item]
    ordered = sorted(runs, key=lambda t: t.created)
    return {t.name: t.state.name for t in ordered if t.state is not None}


def test_etl_example_retries_then_caches(kernel: KernelRunner) -> None:
    path = _copy(kernel, "etl_retries_cache.ipynb")
    kernel.run(path)
    nb = kernel.run(path)
    assert "wrote etl_output/daily_EU.csv" in outputs_text(nb.cells[7])
    assert (kernel.tmp / "etl_output" / "daily_EU.csv").is_file()
    runs = sorted(
        kernel.store.read_flow_runs(FlowRunFilter(flow_names=["etl_demo"])), key=lambda r: r.created
    )
    assert [r.state.type for r in runs if r.state] == [StateType.COMPLETED] * 2
    first, second = (_task_states(kernel, r.id) for r in runs)
    assert first == {"extract": "Completed", "transform": "Completed", "load": "Completed"}
    assert second == {"extract": "Cached", "transform": "Cached", "load": "Completed"}
    extract = next(
        t
        for t in kernel.store.read_task_runs(TaskRunFilter(flow_run_ids=[runs[0].id]))
        if t.name == "extract"
    )
    assert extract.run_count == 2  # the simulated API failed once and was retried


def test_parameterized_report_example(kernel: KernelRunner) -> None:
    nb = kernel.run(_copy(kernel, "parameterized_report.ipynb"))
    assert "Sales report: EU" in "".join(
        o.get("data", {}).get("text/markdown", "") for o in nb.cells[5].outputs
    )
    (run,) = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["sales_report"]))
    assert run.parameters == {"region": "EU", "months": 6, "threshold": 100.0}
    assert run.state is not None and run.state.type is StateType.COMPLETED


def test_error_handling_example(kernel: KernelRunner) -> None:
    nb = kernel.run(_copy(kernel, "error_handling.ipynb"))
    assert "KeyError" in outputs_text(nb.cells[3])
    assert "TaskRunTimeout" in outputs_text(nb.cells[5])
    status = outputs_text(nb.cells[6])
    assert "parse: Failed (KeyError: 'qty')" in status and "slow_api: TimedOut" in status
    (run,) = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["error_handling"]))
    assert run.state is not None and run.state.type is StateType.COMPLETED
    runs = kernel.store.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))
    assert sorted(t.state.name for t in runs if t.state) == [
        "Completed",
        "Completed",
        "Failed",
        "TimedOut",
    ]
