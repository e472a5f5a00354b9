"""Which rules a run's event fires, and the message they send (pure functions).

:class:`RunContext` gathers what a message names: the run, its flow and deployment, its
state, the failing cell (the task run that failed) with its error, and a link to the run
in the JupyterLab panel (``<server URL>lab?nbflow-run=<run id>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nbflow.notifications.models import Automation, MatchKind
from nbflow.schemas import FlowRun, TaskRun
from nbflow.states import State, StateType

__all__ = [
    "RunContext",
    "failing_task",
    "matches",
    "panel_link",
    "render",
    "state_key",
]


def panel_link(base_url: str, flow_run_id: object) -> str:
    """Return the URL that opens the run in the JupyterLab panel."""
    return f"{base_url.rstrip('/')}/lab?nbflow-run={flow_run_id}"


def state_key(state: State | None) -> str | None:
    """Return the rule state a run's state is (``FAILED``, ``LATE``, ...), None if none."""
    if state is None:
        return None
    if state.type is StateType.SCHEDULED:
        return "LATE" if state.name == "Late" else None
    if state.is_terminal:
        return state.type.value
    return None


@dataclass
class RunContext:
    """A run and what a notification about it names."""

    run: FlowRun
    flow_name: str
    deployment_name: str | None = None
    #: The run's tags and its deployment's.
    tags: set[str] = field(default_factory=set)
    failing_task: TaskRun | None = None
    link: str | None = None

    @property
    def where(self) -> str:
        """``flow/deployment``, or the flow alone for a run without a deployment."""
        if self.deployment_name:
            return f"{self.flow_name}/{self.deployment_name}"
        return self.flow_name


def failing_task(task_runs: list[TaskRun]) -> TaskRun | None:
    """Return the task run (cell) that failed last, if any."""
    failed = [
        t
        for t in task_runs
        if t.state is not None and t.state.type in (StateType.FAILED, StateType.CRASHED)
    ]
    if not failed:
        return None
    return max(failed, key=lambda t: (t.end_time or t.updated, t.updated))


def matches(rule: Automation, context: RunContext) -> bool:
    """Whether ``rule`` watches the run of ``context`` (states and durations aside)."""
    value = (rule.match_value or "").strip()
    if rule.match_kind is MatchKind.ANY:
        return True
    if rule.match_kind is MatchKind.FLOW:
        return context.flow_name == value
    if rule.match_kind is MatchKind.TAG:
        return value in context.tags
    if context.deployment_name is None:
        return False
    if "/" in value:
        return value == f"{context.flow_name}/{context.deployment_name}"
    return value == context.deployment_name


def _error(context: RunContext) -> str | None:
    """The error to show: the failing cell's, else the run state's message."""
    task = context.failing_task
    if task is not None and task.state is not None and task.state.message:
        return task.state.message
    state = context.run.state
    if state is not None and state.type in (StateType.FAILED, StateType.CRASHED):
        data = state.data or {}
        if data.get("ename"):
            return f"{data['ename']}: {data.get('evalue', '')}"
        return state.message
    return None


def _cell(context: RunContext) -> str | None:
    if context.failing_task is not None:
        return context.failing_task.name
    state = context.run.state
    if state is not None and isinstance((state.data or {}).get("cell_index"), int):
        return f"cell {state.data['cell_index']}"
    return None


def render(rule: Automation, context: RunContext, event: str) -> dict[str, Any]:
    """Return the message of ``rule`` about ``event``: ``subject``, ``text`` and ``payload``."""
    run, state = context.run, context.run.state
    state_name = state.name if state is not None else "unknown"
    what = event if event.startswith("running longer") else state_name
    subject = f"[nbflow] {context.where}: run {run.name} {what}"
    lines = [f"Flow run {run.name!r} of {context.where} is {state_name}."]
    if event.startswith("running longer"):
        lines[0] = f"Flow run {run.name!r} of {context.where} is {event}."
    if state is not None and state.message:
        lines.append(f"State: {state_name}: {state.message}")
    cell, error = _cell(context), _error(context)
    if cell is not None:
        lines.append(f"Failing cell: {cell}" + (f": {error}" if error else ""))
    elif error is not None and not (state is not None and state.message == error):
        lines.append(f"Error: {error}")
    if context.link:
        lines.append(f"Open the run: {context.link}")
    lines.append(f"(nbflow rule {rule.name!r}, {rule.id})")
    text = "\n".join(lines)
    payload: dict[str, Any] = {
        "event": event,
        "text": text,
        "rule": {"id": str(rule.id), "name": rule.name},
        "flow_run": {
            "id": str(run.id),
            "name": run.name,
            "url": context.link,
            "flow": context.flow_name,
            "deployment": context.deployment_name,
            "tags": sorted(context.tags),
            "parameters": run.parameters,
            "state": {
                "type": state.type.value if state else None,
                "name": state_name,
                "message": state.message if state else None,
                "timestamp": state.timestamp.isoformat() if state else None,
            },
            "start_time": run.start_time.isoformat() if run.start_time else None,
            "end_time": run.end_time.isoformat() if run.end_time else None,
        },
        "failing_cell": None if cell is None else {"name": cell, "error": error},
        "error": error,
    }
    return {"subject": subject, "text": text, "payload": payload}
