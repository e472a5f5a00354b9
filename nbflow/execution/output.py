"""The output notebook of a batch run: where it goes, how it is written and recorded.

The run's token dies with its terminal state, so the executor records the output (its
nbflow summary rewritten to the final state) before it proposes that state.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from uuid import UUID

import nbformat

from nbflow.client import Client
from nbflow.execution.reporter import Reporter
from nbflow.schemas import Artifact, FlowRun, TaskRunFilter
from nbflow.settings import get_settings
from nbflow.states import State, StateType

__all__ = [
    "completed_message",
    "finish_output",
    "output_artifact",
    "output_notebook_path",
    "record_output",
    "save_output",
    "write_output",
]

logger = logging.getLogger("nbflow.execution.executor")


def output_notebook_path(run: FlowRun, flow_name: str) -> Path:
    """Return where the run's output notebook goes (``run.output_path`` when already set)."""
    if run.output_path:
        return Path(run.output_path)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in flow_name) or "flow"
    return get_settings().home / "outputs" / safe / f"{run.id}.ipynb"


def write_output(run: FlowRun, nb: Any, path: Path) -> bool:
    """Write the (partial) output notebook; False if there is none or it cannot be written."""
    if nb is None:
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(path))  # type: ignore[no-untyped-call]
    except Exception:
        logger.warning("flow run %s: could not write %s", run.id, path, exc_info=True)
        return False
    return True


def save_output(
    client: Client, run: FlowRun, nb: Any, path: Path, *, partial: bool = False
) -> str | None:
    """Write the output notebook and record it with the run; None if there is none."""
    if not write_output(run, nb, path):
        return None
    record_output(client, run, path, partial=partial)
    return str(path)


def output_artifact(run: FlowRun, path: Path, *, partial: bool = False) -> Artifact:
    """Return the output notebook's artifact; through a server it carries the notebook.

    A run in a container does not share the server's filesystem, so with
    ``NBFLOW_API_URL`` set the notebook JSON goes in ``data`` (the server's output
    endpoint serves it); a partial output is marked in its ``metadata.nbflow``.
    """
    data: dict[str, Any] | None = {"partial": True} if partial else None
    if get_settings().api_url:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("flow run %s: could not read %s", run.id, path, exc_info=True)
        else:
            if partial:
                data.setdefault("metadata", {}).setdefault("nbflow", {})["partial"] = True
    return Artifact(
        flow_run_id=run.id, key="output-notebook", kind="notebook", uri=str(path), data=data
    )


def completed_message(client: Client, run_id: UUID, reporter: Reporter) -> str:
    """Say how many cells ran and how many task cells were restored from the cache."""
    try:
        tasks = client.read_task_runs(TaskRunFilter(flow_run_ids=[run_id], limit=100_000))
    except Exception:
        tasks = []
    cached = [t for t in tasks if t.state is not None and t.state.name == "Cached"]
    sources = [(t.state.data or {}).get("repaired_from") for t in cached if t.state]
    repaired = [s for s in sources if s]
    cells = max(0, reporter.cells_done - len(cached))  # a restored task cell did not execute
    text = f"{cells} cell{'' if cells == 1 else 's'} executed"
    if repaired:
        n = len(repaired)
        text += f", {n} task cell{'' if n == 1 else 's'} restored from flow run {repaired[0]}"
    if len(cached) > len(repaired):
        hits = len(cached) - len(repaired)
        text += f", {hits} task cell{'' if hits == 1 else 's'} restored from the cache"
    return text


def finish_output(client: Client, run: FlowRun, final: State, out_path: Path) -> None:
    """Rewrite the output notebook's nbflow summary to ``final`` and record the notebook."""
    from nbflow.notebook.summary import refresh_output_summary  # widgets: only at the end

    try:
        tasks = client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id], limit=100_000))
        refresh_output_summary(out_path, run.model_copy(update={"state": final}), tasks)
    except Exception:
        logger.warning("flow run %s: could not update the output's summary", run.id, exc_info=True)
    partial = final.type not in (StateType.COMPLETED, StateType.FAILED)
    record_output(client, run, out_path, partial=partial)


def record_output(client: Client, run: FlowRun, path: Path, *, partial: bool = False) -> None:
    if path.exists():
        client.update_flow_run(run.id, output_path=str(path))
        client.create_artifact(output_artifact(run, path, partial=partial))
