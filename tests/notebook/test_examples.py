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
    assert "[Failed]" in status and "slow_api: TimedOut" in status
    # Each failure ends its run Failed; the next task cell resumes it in a linked run,
    # and the run with both tasks fixed completes by itself.
    runs = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["error_handling"]))
    by_id = {r.id: r for r in runs}
    (first,) = [r for r in runs if r.retry_of is None]
    (second,) = [r for r in runs if r.retry_of == first.id]
    (third,) = [r for r in runs if r.retry_of == second.id]
    assert len(by_id) == 3
    states = {
        r.id: sorted(
            t.state.name
            for t in kernel.store.read_task_runs(TaskRunFilter(flow_run_ids=[r.id]))
            if t.state
        )
        for r in runs
    }
    assert states[first.id] == ["Failed"]
    assert states[second.id] == ["TimedOut"]
    assert states[third.id] == ["Completed", "Completed"]
    assert [r.state.type for r in (first, second, third) if r.state] == [
        StateType.FAILED,
        StateType.FAILED,
        StateType.COMPLETED,
    ]
