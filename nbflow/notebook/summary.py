"""A run's nbflow summary in a notebook file, rewritten with the run's final state.

In a batch run the widget under the ``%%flow`` cell is drawn while the run is Running;
``nbflow execute`` proposes the terminal state only after the last cell, when the kernel
is gone.  Its output notebook would say "Running" for ever.  The widget marks its output
(``metadata.nbflow.flow_run_id``, see :data:`~nbflow.notebook.widget.SUMMARY_KEY`), so
once the run ended :func:`refresh_output_summary` redraws that output, and the saved
widget models it names, from the stored run and task runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nbflow.engine.events import FlowRunEvent, TaskRunEvent
from nbflow.notebook.widget import SUMMARY_KEY, FlowRunWidget
from nbflow.schemas import FlowRun, TaskRun

__all__ = ["refresh_output_summary", "refresh_summaries", "render_summary"]

log = logging.getLogger("nbflow.notebook.summary")

_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _no_schedule(delay: float, fn: Any) -> None:
    """Offline rendering redraws on demand only."""


def render_summary(flow_run: FlowRun, task_runs: Iterable[TaskRun]) -> dict[str, str]:
    """Return the summary of a stored run: ``text/plain``, ``text/html``, header and table."""
    widget = FlowRunWidget(
        flow_run.id, flow_run.flow_name or "", run_name=flow_run.name, scheduler=_no_schedule
    )
    try:
        latest: dict[str, TaskRun] = {}
        for task in sorted(task_runs, key=lambda t: t.created):
            latest[task.task_key] = task
        for task in latest.values():
            if task.state is not None:
                widget.handle(TaskRunEvent(flow_run.id, task, task.state))
        if flow_run.state is not None:
            widget.handle(FlowRunEvent(flow_run.id, flow_run.state))
        widget.run_started = flow_run.start_time or widget.run_started
        widget.run_ended = flow_run.end_time or widget.run_ended
        widget.flush()
        return {
            "text/plain": widget.to_text(),
            "text/html": widget.to_html(),
            "header": widget._header_html(),
            "table": widget._table_html(list(widget.rows.values())),
        }
    finally:
        widget.close()


def refresh_summaries(nb: dict[str, Any], flow_run: FlowRun, task_runs: Sequence[TaskRun]) -> int:
    """Rewrite every summary of ``flow_run`` in notebook ``nb`` (a JSON dict); return how many."""
    rendered: dict[str, str] | None = None
    models = nb.get("metadata", {}).get("widgets", {}).get(_WIDGET_STATE, {}).get("state", {})
    count = 0
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            marker = (output.get("metadata") or {}).get(SUMMARY_KEY)
            if not isinstance(marker, dict) or marker.get("flow_run_id") != str(flow_run.id):
                continue
            if rendered is None:
                rendered = render_summary(flow_run, task_runs)
            data = output.setdefault("data", {})
            data["text/plain"] = rendered["text/plain"]
            data["text/html"] = rendered["text/html"]
            for key, part in (("header_model_id", "header"), ("table_model_id", "table")):
                model = models.get(marker.get(key, ""))
                if isinstance(model, dict) and isinstance(model.get("state"), dict):
                    model["state"]["value"] = rendered[part]
            count += 1
    return count


def refresh_output_summary(path: Path, flow_run: FlowRun, task_runs: Sequence[TaskRun]) -> int:
    """Rewrite the run's summaries in the notebook file at ``path``; return how many.

    A file that cannot be read or written is left as it is (with a warning): the summary
    is a convenience, the run's state is in the store.
    """
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        count = refresh_summaries(nb, flow_run, task_runs)
        if count:
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    except (OSError, ValueError) as exc:
        log.warning(
            "could not write the final summary of flow run %s into %s: %s", flow_run.id, path, exc
        )
        return 0
    return count
