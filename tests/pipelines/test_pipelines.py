"""Notebook pipelines with real kernels: ``run_notebook`` children through the subprocess runner.

The example pipeline (examples/pipeline: two ``sales.ipynb`` children fanned out, then
``report.ipynb`` on their outputs) runs from a notebook flow (``nbflow run``) and from a
``@flow`` function; a failing child and a cancelled parent propagate.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nbflow.client.embedded import EmbeddedClient
from nbflow.notebook.batch_runs import create_notebook_run, launch, prepare_notebook
from nbflow.runners.subprocess import SubprocessRunner
from nbflow.schemas import FlowRun, FlowRunFilter
from nbflow.settings import Settings
from nbflow.states import StateType
from tests.cli.conftest import Result, Runner

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline"
#: EU (120 + 80 + 45) + US (300 + 150): the example's grand total.
GRAND_TOTAL = 695


def _copy_example(tmp_path: Path) -> Path:
    target = tmp_path / "pipeline"
    shutil.copytree(EXAMPLE, target)
    return target


def _run_id(result: Result) -> str:
    match = re.search(r"run id:\s+(\S+)", result.out)
    assert match, result.out + result.err
    return match.group(1)


def _show(nbflow: Runner, run_id: str) -> dict[str, Any]:
    result = nbflow("runs", "show", run_id, "--json")
    assert result.code == 0, result.err
    doc: dict[str, Any] = result.json()
    return doc


def _outputs_text(path: str) -> str:
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    texts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
            texts.append("".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


def _assert_children(nbflow: Runner, parent: dict[str, Any], by_task: dict[str | None, int]):
    children = parent["children"]
    assert len(children) == sum(by_task.values())
    tasks: dict[str | None, int] = {}
    for child in children:
        tasks[child["parent_task"]] = tasks.get(child["parent_task"], 0) + 1
        doc = _show(nbflow, child["id"])
        assert doc["parent_flow_run_id"] == parent["id"]
        assert doc["parent_task_run_id"] == child["parent_task_run_id"]
        assert doc["state"]["type"] == "COMPLETED"
    assert tasks == by_task
    flows = sorted(c["flow_name"] for c in children)
    assert flows == ["report", "sales", "sales"]


def test_pipeline_from_a_notebook_flow(nbflow: Runner, tmp_path: Path) -> None:
    folder = _copy_example(tmp_path)
    result = nbflow("run", "pipeline.ipynb", cwd=folder, timeout=240)
    assert result.code == 0, result.out + result.err
    parent = _show(nbflow, _run_id(result))
    assert parent["state"]["type"] == "COMPLETED"
    # Each child is linked to the %%task cell that ran it.
    _assert_children(nbflow, parent, {"fan_out": 2, "report": 1})
    text = _outputs_text(re.search(r"output:\s+(\S+)", result.out).group(1))  # type: ignore[union-attr]
    assert "{'EU': 245, 'US': 450}" in text
    assert f"grand total {GRAND_TOTAL}" in text
    shown = nbflow("runs", "show", parent["id"])
    assert "Child runs (3)" in shown.out
    assert "fan_out" in shown.out and "report.ipynb" in shown.out


def _python(script: Path, home: Path, timeout: float = 240) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW_")}
    env["NBFLOW_HOME"] = str(home)
    proc = subprocess.run(
        [sys.executable, script.name],
        cwd=script.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_pipeline_from_a_flow_function(nbflow: Runner, nbflow_home: Path, tmp_path: Path) -> None:
    folder = _copy_example(tmp_path)
    result = _python(folder / "pipeline_flow.py", nbflow_home)
    assert result.code == 0, result.out + result.err
    match = re.search(rf"grand total {GRAND_TOTAL} \(report run (\S+)\)", result.out)
    assert match, result.out + result.err
    report = _show(nbflow, match.group(1))
    assert report["parameters"] == {"totals": {"EU": 245, "US": 450}}
    parent = _show(nbflow, report["parent_flow_run_id"])
    assert parent["flow_name"] == "sales_pipeline_py"
    assert parent["state"]["type"] == "COMPLETED"
    # A @flow function's body is no task run: the children name only the flow run.
    _assert_children(nbflow, parent, {None: 3})


BROKEN_CHILD = [
    "%load_ext nbflow",
    "%%flow broken --outputs value\nregion = 'XX'",
    "%%task prepare\nvalue = 1",
    "%%task explode\nraise ValueError(f'no sales for region {region}')",
]


def _write(path: Path, sources: list[str]) -> Path:
    from nbflow.notebook import document as nbs

    path.write_text(json.dumps(nbs.new_notebook(sources)), encoding="utf-8")
    return path


def test_a_failing_child_fails_the_calling_task(nbflow: Runner, tmp_path: Path) -> None:
    _write(tmp_path / "broken.ipynb", BROKEN_CHILD)
    _write(
        tmp_path / "caller.ipynb",
        [
            "%load_ext nbflow\nfrom nbflow import run_notebook",
            "%%flow caller\n# no parameters",
            "%%task call_child\nchild = run_notebook('broken.ipynb')",
            "%%task after\nprint('never')",
        ],
    )
    result = nbflow("run", "caller.ipynb", timeout=240)
    assert result.code == 1, result.out + result.err
    parent = _show(nbflow, _run_id(result))
    assert parent["state"]["type"] == "FAILED"
    (child,) = parent["children"]
    assert child["state"]["type"] == "FAILED"
    tasks = {t["name"]: t["state"] for t in parent["task_runs"]}
    assert tasks["call_child"]["type"] == "FAILED"
    assert "after" not in tasks
    # The caller's error names the child run, its failing cell and the error.
    for text in (parent["state"]["data"]["evalue"], tasks["call_child"]["message"]):
        assert child["id"] in text
        assert "task 'explode'" in text and "cell 3" in text
        assert "ValueError: no sales for region XX" in text
    assert parent["state"]["data"]["ename"] == "NotebookRunFailed"


def test_a_failing_child_raises_in_a_flow_function(
    nbflow: Runner, nbflow_home: Path, tmp_path: Path
) -> None:
    _write(tmp_path / "broken.ipynb", BROKEN_CHILD)
    script = tmp_path / "caller.py"
    script.write_text(
        "import json\n"
        "from nbflow import flow, run_notebook\n"
        "from nbflow import NotebookRunFailed\n"
        "@flow\n"
        "def caller():\n"
        "    try:\n"
        "        run_notebook('broken.ipynb', {'region': 'YY'})\n"
        "    except NotebookRunFailed as exc:\n"
        "        print(json.dumps({'run': str(exc.flow_run.id), 'task': exc.task,\n"
        "                          'cell': exc.cell_index, 'ename': exc.ename,\n"
        "                          'evalue': exc.evalue}))\n"
        "        raise\n"
        "caller()\n",
        encoding="utf-8",
    )
    result = _python(script, nbflow_home)
    assert result.code != 0
    assert "NotebookRunFailed: child notebook" in result.err
    error = json.loads(result.out.strip().splitlines()[-1])
    # The cell index is the output notebook's: papermill injected a parameters cell.
    assert error["task"] == "explode" and error["cell"] == 4
    assert (error["ename"], error["evalue"]) == ("ValueError", "no sales for region YY")
    child = _show(nbflow, error["run"])
    assert child["state"]["type"] == "FAILED"
    parent = _show(nbflow, child["parent_flow_run_id"])
    assert parent["state"]["type"] == "FAILED"


def _wait_for(predicate: Callable[[], bool], what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancelling_the_parent_cancels_its_running_children(
    client: EmbeddedClient,
    settings: Settings,
    write_notebook: Callable[..., Path],
    tmp_path: Path,
) -> None:
    write_notebook(
        "slow.ipynb",
        [
            "%load_ext nbflow",
            "%%flow slow\nlabel = 'a'",
            "%%task wait\nimport os, pathlib, time\n"
            "pathlib.Path(f'{label}.pid').write_text(str(os.getpid()))\n"
            "time.sleep(600)",
        ],
    )
    parent_path = write_notebook(
        "parent.ipynb",
        [
            "%load_ext nbflow\nfrom nbflow import run_notebook",
            "%%flow parent\n# no parameters",
            "%%task fan_out\n"
            "runs = run_notebook.map('slow.ipynb', [{'label': 'a'}, {'label': 'b'}])\n"
            "done = [r.result() for r in runs]",
        ],
    )
    runner = SubprocessRunner(client=client, settings=settings)
    try:
        parent = create_notebook_run(client, prepare_notebook(parent_path), {})
        launch(client, parent, runner)

        def children() -> list[FlowRun]:
            return client.read_flow_runs(FlowRunFilter(parent_flow_run_ids=[parent.id]))

        pid_files = [tmp_path / "a.pid", tmp_path / "b.pid"]
        _wait_for(lambda: all(p.exists() and p.read_text() for p in pid_files), "both children")
        kernels = [int(p.read_text()) for p in pid_files]
        assert all(_alive(pid) for pid in kernels)
        # Cancel the parent as its owner does (the dispatcher): the lifecycle's cancel,
        # then SIGTERM to its process.
        runner.cancel(client.read_flow_run(parent.id), grace_seconds=60)
        final = client.read_flow_run(parent.id).state
        assert final is not None and final.type is StateType.CANCELLED
        _wait_for(
            lambda: all(c.state is not None and c.state.is_terminal for c in children()),
            "the children to end",
        )
        ended = children()
        assert len(ended) == 2
        for child in ended:
            assert child.state is not None and child.state.type is StateType.CANCELLED, child.state
            names = [s.name for s in client.read_flow_run_states(child.id)]
            assert "Cancelling" in names
        _wait_for(lambda: not any(_alive(pid) for pid in kernels), "the children's kernels to exit")
    finally:
        runner.close()
