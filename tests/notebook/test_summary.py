"""The nbflow summary of an output notebook states the run's final state (real batch run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nbflow.notebook.summary import refresh_output_summary
from nbflow.schemas import FlowRunFilter, TaskRunFilter

from .conftest import KernelRunner

pytestmark = pytest.mark.slow


def _summaries(nb: dict) -> list[str]:  # type: ignore[type-arg]
    return [
        "".join(o["data"]["text/plain"])
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if "nbflow" in o.get("metadata", {})
    ]


def test_output_notebook_summary_is_rewritten_with_the_final_state(kernel: KernelRunner) -> None:
    path = kernel.notebook(
        [
            "%load_ext nbflow",
            "%%flow summarised\nn = 2",
            "%%task first\nx = n * 2",
            "%%task --retries 1\nimport pathlib\nflag = pathlib.Path('tried')\n"
            "if not flag.exists():\n    flag.touch()\n    raise RuntimeError('once')\ny = x + 1",
        ],
        "summarised.ipynb",
    )
    done = subprocess.run(
        [sys.executable, "-m", "nbflow", "run", str(path), "-q"],
        env=kernel.env(path),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=kernel.tmp,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = kernel.store.read_flow_runs(FlowRunFilter(flow_names=["summarised"]))
    assert run.output_path is not None
    output = Path(run.output_path)
    # The kernel drew the summary while the run ran; nbflow execute rewrote it at the end.
    # Rewriting again from the store is idempotent.
    tasks = kernel.store.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))
    for _ in range(2):
        nb = json.loads(output.read_text())
        (final,) = _summaries(nb)
        assert "[Completed]" in final and "[Running]" not in final
        assert refresh_output_summary(output, run, tasks) == 1
    nb = json.loads(output.read_text())
    (final,) = _summaries(nb)
    assert "[Completed]" in final and "[Running]" not in final
    assert "first: Completed" in final and "cell:flag,y: Completed [1 retry]" in final
    html = next(
        "".join(o["data"]["text/html"])
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if "nbflow" in o.get("metadata", {})
    )
    assert "Completed" in html and "total" in html and "Running" not in html
    # The saved widget models say the same, so JupyterLab shows the final state too.
    marker = next(
        o["metadata"]["nbflow"]
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if "nbflow" in o.get("metadata", {})
    )
    models = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert "Completed" in models[marker["header_model_id"]]["state"]["value"]
