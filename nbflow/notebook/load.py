"""``%nbflow load RUN [TASK ...]``: a run's task-cell outputs, loaded into the live kernel.

A batch run persists each completed ``%%task`` cell's output variables through result
storage (:mod:`nbflow.notebook.repair`), and an interactive ``--cache`` cell persists its
cache record the same way: the task run's Completed (or Cached) state names the
``result_key``.  Loading reads those records, oldest cell first, and puts the variables
into the namespace (the names a cell deleted are dropped), so a failed scheduled run can
be debugged at its failed cell in a notebook.  It prints what it loaded from which cell,
and for every other cell why not.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

from nbflow.client.base import Client
from nbflow.engine.results import get_result_store
from nbflow.schemas import FlowRun, TaskRun, TaskRunFilter
from nbflow.states import StateType

__all__ = ["LoadReport", "load_run_outputs"]


@dataclass(frozen=True)
class CellLoad:
    """What loading did for one task cell: the names it loaded, or why it loaded none."""

    task: str
    names: tuple[str, ...] = ()
    why_not: str | None = None
    task_run: TaskRun | None = None
    #: Of a cell loaded in part: what is missing.
    note: str | None = None


@dataclass(frozen=True)
class LoadReport:
    """What ``%nbflow load`` did, cell by cell."""

    run: FlowRun
    cells: tuple[CellLoad, ...]

    @property
    def loaded(self) -> list[str]:
        """Every name loaded, in loading order."""
        return [name for cell in self.cells for name in cell.names]

    def text(self) -> str:
        """Say what was loaded from which cell, and what was not and why."""
        state = self.run.state.name if self.run.state else "no state"
        lines = [f"flow run {self.run.id} ({self.run.name}, {self.run.flow_name}): {state}"]
        width = max([len(c.task) for c in self.cells] + [4])
        for cell in self.cells:
            where = f"task run {str(cell.task_run.id)[:8]}" if cell.task_run else ""
            if cell.why_not is None:
                names = ", ".join(cell.names) or "(no variables)"
                lines.append(f"  loaded   {cell.task:<{width}}  {names}  [{where}]")
                if cell.note:
                    lines.append(f"           {'':<{width}}  (not all: {cell.note})")
            else:
                lines.append(f"  skipped  {cell.task:<{width}}  {cell.why_not}")
        if not self.cells:
            lines.append("  (the run has no task runs)")
        return "\n".join(lines)


def _latest_by_task(task_runs: Sequence[TaskRun]) -> dict[str, TaskRun]:
    """Return the last task run of each task key, in the order the cells first ran."""
    latest: dict[str, TaskRun] = {}
    for task_run in sorted(task_runs, key=lambda t: t.created):
        latest[task_run.task_key] = task_run
    return latest


def _load_one(task_run: TaskRun, ns: MutableMapping[str, Any]) -> CellLoad:
    name = task_run.name
    state = task_run.state
    if state is None or state.type is not StateType.COMPLETED:
        how = f"{state.name}: {state.message}" if state and state.message else None
        return CellLoad(
            name,
            why_not=f"it ended {how or (state.name if state else 'without a state')}",
            task_run=task_run,
        )
    result_key = (state.data or {}).get("result_key")
    if not result_key:
        return CellLoad(
            name,
            why_not="its outputs were not persisted (an interactive cell without --cache)",
            task_run=task_run,
        )
    record = get_result_store().read(str(result_key))
    value = record.value if record is not None else None
    if not isinstance(value, Mapping) or not isinstance(value.get("outputs"), Mapping):
        return CellLoad(
            name,
            why_not=f"its persisted outputs are missing or unreadable (result {result_key})",
            task_run=task_run,
        )
    if value.get("unrestorable") and not value["outputs"]:
        return CellLoad(
            name,
            why_not=f"its outputs were not persisted: {value['unrestorable']}",
            task_run=task_run,
        )
    loaded: dict[str, Any] = {}
    for var, data in value["outputs"].items():
        try:
            loaded[var] = cloudpickle.loads(data)
        except Exception as exc:  # e.g. its class is not importable here
            return CellLoad(
                name,
                why_not=f"output {var!r} cannot be unpickled here ({type(exc).__name__}: {exc})",
                task_run=task_run,
            )
    ns.update(loaded)
    for var in value.get("deleted", ()):
        ns.pop(var, None)
    return CellLoad(name, tuple(loaded), task_run=task_run, note=value.get("unrestorable"))


def load_run_outputs(
    client: Client, run: FlowRun, ns: MutableMapping[str, Any], tasks: Sequence[str] = ()
) -> LoadReport:
    """Load the persisted outputs of ``run``'s task cells (all, or those named) into ``ns``.

    A name in ``tasks`` matches a task run's name or task key; one that matches none is
    reported as skipped, listing the run's tasks.
    """
    latest = _latest_by_task(
        client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id], limit=100_000))
    )
    chosen = list(latest.values())
    missing: list[CellLoad] = []
    if tasks:
        wanted = set(tasks)
        chosen = [t for t in chosen if t.name in wanted or t.task_key in wanted]
        found = {t.name for t in chosen} | {t.task_key for t in chosen}
        known = ", ".join(sorted({t.name for t in latest.values()})) or "none"
        missing = [
            CellLoad(task, why_not=f"no task of that name in this run (its tasks: {known})")
            for task in tasks
            if task not in found
        ]
    cells = [_load_one(t, ns) for t in chosen]
    return LoadReport(run, tuple(cells + missing))
