"""Resuming a failed interactive run: what completed in this kernel and may be reused.

When a ``%%task`` cell fails, :class:`~nbflow.notebook.interactive.InteractiveRun` ends the
run Failed at once and keeps a :class:`ResumePoint`: the run's tasks, and for each task
that succeeded (and was not made stale since) a fingerprint of its inputs and outputs as
the namespace held them at the failure.  The next ``%%task`` cell starts a new run of the
same flow linked to the failed one (``retry_of``) and records as ``Cached`` every task
whose fingerprint is unchanged then: its code did not run again and nothing changed what
it read or wrote, so what it produced is still in the namespace.  Fingerprints are taken
only when a run fails, so successful cells pay nothing for this.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from nbflow.engine.fingerprint import Unfingerprintable, fingerprint_inputs
from nbflow.exceptions import ValidationError
from nbflow.notebook.arguments import parse_task_line
from nbflow.notebook.cell_graph import outputs_name
from nbflow.notebook.cells import analyze_cell

__all__ = ["DoneTask", "ResumePoint", "notebook_task_keys"]

log = logging.getLogger("nbflow.notebook.resume")


@dataclass(frozen=True)
class DoneTask:
    """A task that succeeded in a run, and the task run that actually produced its outputs."""

    key: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    upstream: tuple[str, ...]  # task keys
    source_flow_run_id: UUID
    source_task_run_id: UUID


def namespace_print(ns: Mapping[str, Any], names: Iterable[str]) -> str:
    """Fingerprint the values ``names`` have in ``ns``.

    A value that cannot be fingerprinted (an open file, a lock, a model) counts as
    unchanged while the same object stays bound to the name: its identity stands in.
    """
    parts: list[str] = []
    for name in sorted(set(names)):
        if name not in ns:
            parts.append(f"{name}:-")
            continue
        value = ns[name]
        try:
            parts.append(f"{name}:{fingerprint_inputs({name: value})}")
        except Unfingerprintable:
            parts.append(f"{name}:id={id(value)}:{type(value).__qualname__}")
    return "\n".join(parts)


@dataclass
class ResumePoint:
    """A failed run: its task keys, and the tasks it completed as they were when it failed."""

    failed_run_id: UUID
    flow_id: UUID
    known: tuple[str, ...]
    done: dict[str, DoneTask]
    prints: dict[str, str] = field(default_factory=dict)

    @classmethod
    def take(
        cls,
        failed_run_id: UUID,
        flow_id: UUID,
        known: Iterable[str],
        done: Iterable[DoneTask],
        ns: Mapping[str, Any],
    ) -> ResumePoint:
        """Fingerprint the inputs and outputs of each completed task now (at the failure)."""
        point = cls(failed_run_id, flow_id, tuple(known), {t.key: t for t in done})
        for key, task in point.done.items():
            point.prints[key] = namespace_print(ns, task.inputs + task.outputs)
        return point

    def reusable(self, ns: Mapping[str, Any], rerun_key: str) -> list[DoneTask]:
        """Return the completed tasks whose inputs and outputs are unchanged, upstream first.

        ``rerun_key`` (the cell being run) runs instead.  A task is reused only when every
        task it depends on is reused too.
        """
        kept: dict[str, DoneTask] = {}
        for key in self.known:
            task = self.done.get(key)
            if task is None or key == rerun_key or key not in self.prints:
                continue
            if any(up in self.done and up not in kept for up in task.upstream):
                continue
            if namespace_print(ns, task.inputs + task.outputs) == self.prints[key]:
                kept[key] = task
        return list(kept.values())


def notebook_task_keys(path: Path | None, transform: Any) -> list[str]:
    """Return the task keys of the ``%%task`` cells of the notebook as saved (may be empty).

    A key is the cell's ``%%task`` name, else ``cell-<id>`` (when Jupyter sends cell ids)
    *and* the name made from its outputs, since the kernel may know either; the caller
    counts a cell as done when any of its keys is.  Unreadable notebooks give no keys.
    """
    if path is None or not path.is_file():
        return []
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError) as exc:
        log.debug("cannot read %s for its task cells: %s", path, exc)
        return []
    keys: list[str] = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        first, _, body = source.lstrip().partition("\n")
        if not first.startswith("%%task"):
            continue
        try:
            spec = parse_task_line(first[len("%%task") :])
        except (ValidationError, SystemExit):
            continue
        if spec.name:
            keys.append(spec.name)
            continue
        names: list[str] = []
        if cell.get("id"):
            names.append(f"cell-{str(cell['id'])[:16]}")
        try:
            name = outputs_name(analyze_cell(body, transform=transform))
        except Exception:  # a cell that does not parse has no inferable name
            name = None
        if name:
            names.append(name)
        if names:
            keys.append("|".join(names))
    return keys
