"""%%flow / %%task / %nbflow in a real ipykernel, recorded in a real embedded store."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from nbflow.schemas import FlowRunFilter, TaskRunFilter
from nbflow.states import StateType

from .conftest import KernelRunner, outputs_text, widget_html

pytestmark = pytest.mark.slow


def _tasks(kernel: KernelRunner, flow_run_id: object) -> dict[str, object]:
    runs = kernel.store.read_task_runs(TaskRunFilter(flow_run_ids=[flow_run_id]))  # type: ignore[list-item]
    return {t.name: t for t in runs}


def test_flow_and_tasks_are_recorded_with_their_dag(kernel: KernelRunner) -> None:
    path = kernel.notebook(
        [
            "%load_ext nbflow",
            '%%flow sales --schedule "0 6 * * *" --timezone Europe/Berlin --runner docker\n'
            'region = "EU"\nn: int = 4',
            "%%task extract\nrows = [i * 10 for i in range(n)]",
            "%%task\ntotal = sum(rows)\ntotal",
            "%%task report --after extract\nsummary = f'{region}: {total}'\nprint(summary)",
            "%nbflow status",
            "%nbflow finish",
        ]
    )
    nb = kernel.run(path)
    assert "EU: 60" in outputs_text(nb.cells[4])
    # No server: the schedule is kept for later, and one line says so.
    assert "takes effect once the notebook is deployed" in outputs_text(nb.cells[1])
    assert "60" in outputs_text(nb.cells[3])  # the last expression is displayed as usual
    assert "report: Completed" in outputs_text(nb.cells[5])
    (run,) = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["sales"]))
    assert run.mode == "interactive"
    assert run.state is not None and run.state.type is StateType.COMPLETED
    assert run.parameters == {"region": "EU", "n": 4}
    assert run.notebook_path == str(path)
    flow = kernel.store.read_flow(run.flow_id)
    assert flow.parameters_schema["properties"]["n"]["type"] == "integer"
    tasks = _tasks(kernel, run.id)
    extract, total, report = tasks["extract"], tasks["cell:total"], tasks["report"]
    assert (extract.inputs, extract.outputs) == (["n"], ["rows"])  # type: ignore[attr-defined]
    assert total.upstream == [extract.id]  # type: ignore[attr-defined]
    assert set(report.upstream) == {extract.id, total.id}  # type: ignore[attr-defined]
    assert all(t.state.type is StateType.COMPLETED for t in tasks.values())  # type: ignore[attr-defined]
    # the live widget's model state, as stored by nbclient
    html = widget_html(nb)
    assert "extract" in html and "report" in html and "sales" in html
    # the static fallback shown without a widget manager
    flow_outputs = nb.cells[1].outputs
    assert any("text/html" in o.get("data", {}) for o in flow_outputs)
    static = next(o["data"]["text/html"] for o in flow_outputs if "text/html" in o.get("data", {}))
    assert "report" in static


CACHED_NOTEBOOK = [
    "%load_ext nbflow",
    "%%flow cached\nscale = 2",
    "%%task load --cache 1d\n"
    "with open('counter.txt', 'a') as fh:\n    fh.write('x')\n"
    "import numpy as np\nvalues = np.arange(5) * scale\nvalues.sum()",
    "%%task\nprint('doubled', (values * 2).tolist())",
    "%nbflow finish",
]


def test_second_run_of_an_unchanged_notebook_executes_no_cached_cell(kernel: KernelRunner) -> None:
    path = kernel.notebook(CACHED_NOTEBOOK)
    kernel.run(path)
    nb = kernel.run(path)
    assert (kernel.tmp / "counter.txt").read_text() == "x"  # the cached cell ran once
    assert "doubled [0, 4, 8, 12, 16]" in outputs_text(nb.cells[3])  # outputs restored
    assert "20" in outputs_text(nb.cells[2])  # the cell's result is shown again
    runs = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["cached"]))
    states = sorted(_tasks(kernel, r.id)["load"].state.name for r in runs)  # type: ignore[attr-defined]
    assert states == ["Cached", "Completed"]


def test_changed_input_or_parameter_misses_the_cache(kernel: KernelRunner) -> None:
    kernel.run(kernel.notebook(CACHED_NOTEBOOK))
    changed = [c.replace("scale = 2", "scale = 3") for c in CACHED_NOTEBOOK]
    nb = kernel.run(kernel.notebook(changed, "changed.ipynb"))
    assert (kernel.tmp / "counter.txt").read_text() == "xx"
    assert "doubled [0, 6, 12, 18, 24]" in outputs_text(nb.cells[3])


def test_unpicklable_input_runs_without_cache_and_warns(kernel: KernelRunner) -> None:
    path = kernel.notebook(
        [
            "%load_ext nbflow",
            "import threading\nlock = threading.Lock()",
            "%%task guarded --cache\nwith lock:\n    value = 1",
        ]
    )
    nb = kernel.run(path)
    text = outputs_text(nb.cells[2])
    assert "cache off for this run" in text and "lock" in text


def test_retries_failures_and_timeouts(kernel: KernelRunner) -> None:
    path = kernel.notebook(
        [
            "%load_ext nbflow",
            "%%flow flaky\nlimit = 2",
            "%%task flaky --retries 3 --retry-delay 0\n"
            "import pathlib\np = pathlib.Path('attempts.txt')\n"
            "p.write_text(p.read_text() + 'a' if p.exists() else 'a')\n"
            "if len(p.read_text()) < limit:\n    raise RuntimeError('not yet')\nok = True",
            "%%task broken\ndef inner():\n    return {}['missing']\ninner()",
            "%%task slow --timeout 0.5\nimport time\ntime.sleep(30)",
            "%nbflow finish",
        ]
    )
    nb = kernel.run(path, allow_errors=True)
    broken_errors = [o for o in nb.cells[3].outputs if o["output_type"] == "error"]
    assert broken_errors and broken_errors[0]["ename"] == "KeyError"
    traceback = "\n".join(broken_errors[0]["traceback"])
    assert "inner" in traceback and "task_engine" not in traceback  # the user's frames only
    # `broken` ends its run Failed; `slow` resumes it in a linked run, which it fails too.
    runs = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["flaky"]))
    (run,) = [r for r in runs if r.retry_of is None]
    (resumed,) = [r for r in runs if r.retry_of == run.id]
    tasks = _tasks(kernel, run.id)
    assert tasks["flaky"].state.name == "Completed" and tasks["flaky"].run_count == 2  # type: ignore[attr-defined]
    assert tasks["broken"].state.name == "Failed"  # type: ignore[attr-defined]
    assert "KeyError" in (tasks["broken"].state.message or "")  # type: ignore[attr-defined]
    assert run.state is not None and run.state.type is StateType.FAILED
    assert "broken" in (run.state.message or "")
    resumed_tasks = _tasks(kernel, resumed.id)
    assert resumed_tasks["slow"].state.name == "TimedOut"  # type: ignore[attr-defined]
    assert resumed_tasks["flaky"].state.name == "Cached"  # type: ignore[attr-defined]
    assert resumed.state is not None and resumed.state.type is StateType.FAILED
    assert "slow" in (resumed.state.message or "")


def test_kernel_interrupt_cancels_the_task_and_the_run(kernel: KernelRunner) -> None:
    marker = kernel.tmp / "sleeping"
    path = kernel.notebook(
        [
            "%load_ext nbflow",
            "%%flow interrupted\nx = 1",
            f"%%task nap\nimport pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(120)",
        ]
    )
    nb = nbformat.read(path, as_version=4)
    client = kernel.client(nb, path)
    with client.setup_kernel(env=kernel.env(path)):
        client.execute_cell(nb.cells[0], 0)
        client.execute_cell(nb.cells[1], 1)

        def interrupt() -> None:
            while not marker.exists():
                time.sleep(0.05)
            asyncio.run(client.km.interrupt_kernel())

        thread = threading.Thread(target=interrupt, daemon=True)
        thread.start()
        with pytest.raises(CellExecutionError) as info:
            client.execute_cell(nb.cells[2], 2)
        assert "KeyboardInterrupt" in str(info.value)
        thread.join()
    # The user's frame where it stopped, not 40 lines of nbflow's machinery.
    (error,) = [o for o in nb.cells[2].outputs if o["output_type"] == "error"]
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))
    assert "time.sleep(120)" in traceback
    assert "nbflow/" not in traceback and "task_engine" not in traceback
    assert "cancelled" in traceback
    (run,) = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["interrupted"]))
    assert run.state is not None and run.state.type is StateType.CANCELLED
    assert _tasks(kernel, run.id)["nap"].state.type is StateType.CANCELLED  # type: ignore[attr-defined]


def test_bad_options_give_clear_errors_and_register_nothing(kernel: KernelRunner) -> None:
    path = kernel.notebook(
        [
            "%load_ext nbflow",
            "%%flow f --runner lambda\nx = 1",
            "%%flow f --schedule 'every day'\nx = 1",
            "%%flow f --timezone Mars/Olympus\nx = 1",
            "%%flow f\nx = compute()",
            "%%task t --retries many\ny = 1",
            "%nbflow deploy",
        ]
    )
    nb = kernel.run(path, allow_errors=True)
    text = [outputs_text(c) for c in nb.cells]
    assert "unknown runner" in text[1] and "docker" in text[1] and "kubernetes" in text[1]
    assert "cron" in text[2]
    assert "Mars/Olympus" in text[3]
    assert "not a literal" in text[4]
    assert "--retries" in text[5]
    assert "NBFLOW_API_URL is not set" in text[6] and "nbflow server" in text[6]
    assert kernel.store.read_flow_runs() == []


def test_task_without_flow_cell_starts_a_run_named_after_the_notebook(kernel: KernelRunner) -> None:
    path = kernel.notebook(
        ["%load_ext nbflow", "%%task\na = 1", "%nbflow runs", "%nbflow finish"], "quick_look.ipynb"
    )
    nb = kernel.run(path)
    (run,) = kernel.store.read_flow_runs()
    assert run.flow_name == "quick_look" and run.mode == "interactive"
    assert str(run.id) in outputs_text(nb.cells[2])


def test_python_api_flows_and_tasks_in_cells(kernel: KernelRunner) -> None:
    path = kernel.notebook(
        [
            "from nbflow import flow, task\n"
            "@task(retries=1)\ndef double(x: int) -> int:\n    return 2 * x\n"
            "@task\nasync def inc(x: int) -> int:\n    return x + 1\n"
            "@flow\ndef pipeline(n: int = 3) -> int:\n"
            "    futures = double.map(range(n))\n    return sum(f.result() for f in futures)",
            "print('result', pipeline(4))",
            "import asyncio\nprint('async', await inc(1))",
        ]
    )
    nb = kernel.run(path)
    assert "result 12" in outputs_text(nb.cells[1])
    assert "async 2" in outputs_text(nb.cells[2])
    (run,) = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["pipeline"]))
    assert run.state is not None and run.state.type is StateType.COMPLETED


def test_flow_cell_rerun_finishes_the_previous_run(kernel: KernelRunner, tmp_path: Path) -> None:
    path = kernel.notebook(
        [
            "%load_ext nbflow",
            "%%flow again\nk = 1",
            "%%task\nj = k",
            "%%flow again\nk = 2",
            "%nbflow finish",
        ]
    )
    kernel.run(path)
    runs = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["again"]))
    assert len(runs) == 2
    assert all(r.state is not None and r.state.type is StateType.COMPLETED for r in runs)


def test_downstream_tasks_turn_stale_when_an_upstream_result_changes(kernel: KernelRunner) -> None:
    path = kernel.notebook(
        [
            "%load_ext nbflow",
            "base = 1",
            "%%task a\nx = base * 10",
            "%%task b\ny = x + 1",
            "%%task a\nx = base * 10",  # re-run, same result: b stays fresh
            "%nbflow status",
            "base = 2",
            "%%task a\nx = base * 10",  # re-run, new result: b is stale
            "%nbflow status",
        ]
    )
    nb = kernel.run(path)
    assert "b: Completed" in outputs_text(nb.cells[5])
    assert "stale" not in outputs_text(nb.cells[5])
    assert "b: Completed [stale: an input changed]" in outputs_text(nb.cells[8])


def test_top_level_await_and_nbflow_commands(kernel: KernelRunner) -> None:
    path = kernel.notebook(
        [
            "%load_ext nbflow",
            "%%flow awaited\nk = 2",
            "%%task\nimport asyncio\nawait asyncio.sleep(0)\nz = k * 21",
            "print(z)",
            "%nbflow runs",
        ]
    )
    nb = kernel.run(path)
    assert "42" in outputs_text(nb.cells[3])
    (run,) = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["awaited"]))
    prefix = str(run.id)[:8]
    assert prefix in outputs_text(nb.cells[4])
    nb.cells.append(nbformat.v4.new_code_cell(f"%nbflow show {prefix}"))
    nbformat.write(nb, path)
    nb = kernel.run(path)
    assert "cell:z" in outputs_text(nb.cells[5]) and "Completed" in outputs_text(nb.cells[5])
