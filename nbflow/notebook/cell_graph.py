"""The DAG of a kernel's task cells: which cell last produced each name.

It outlives interactive runs (a new ``%%flow`` run keeps the notebook's namespace), and
gives a task cell its identity, its upstream tasks, its cache key (from the fingerprints
of its inputs, see :mod:`nbflow.engine.fingerprint`) and which downstream tasks went stale
when its outputs changed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from IPython.core.error import UsageError

from nbflow.engine.fingerprint import Unfingerprintable, cell_cache_key, fingerprint_inputs
from nbflow.notebook.arguments import TaskOptionsSpec
from nbflow.notebook.cells import CellAnalysis
from nbflow.states import State

__all__ = ["CellGraph", "outputs_name"]


def outputs_name(analysis: CellAnalysis) -> str | None:
    """Return the name of an unnamed task cell, made from its outputs (None without any)."""
    shown = [n for n in analysis.outputs if n not in analysis.imported] or list(analysis.outputs)
    if not shown:
        return None
    return "cell:" + ",".join(shown[:3]) + ("..." if len(shown) > 3 else "")


class CellGraph:
    """Producers, inputs and outputs of the task cells run in one kernel."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.producers: dict[str, str] = {}  # name -> task key that last assigned it
        self.task_inputs: dict[str, tuple[str, ...]] = {}
        self.task_names: dict[str, str] = {}  # task name -> task key
        self.output_prints: dict[str, str | None] = {}  # task key -> its outputs' fingerprint
        self.task_outputs: dict[str, tuple[str, ...]] = {}
        self._anonymous = 0

    def identity(
        self, spec: TaskOptionsSpec, analysis: CellAnalysis, cell_id: str | None
    ) -> tuple[str, str]:
        """Return the task key and name of a cell: its ``%%task`` name, else its outputs."""
        if spec.name:
            self.task_names[spec.name] = spec.name
            return spec.name, spec.name
        name = outputs_name(analysis) or ""
        if not name:
            self._anonymous += 1
            name = f"cell-{self._anonymous}"
        key = f"cell-{cell_id}" if cell_id else name
        self.task_names[name] = key
        return key, name

    def label(self, key: str) -> str:
        """Return the first name a task key was run under (the key itself if none)."""
        for name, k in self.task_names.items():
            if k == key:
                return name
        return key

    def upstream(self, key: str, inputs: Iterable[str], after: Iterable[str]) -> set[str]:
        """Return the keys of the tasks ``key`` depends on: producers of its inputs, ``--after``."""
        upstream_keys = {self.producers[n] for n in inputs if n in self.producers} - {key}
        for name in after:
            if name not in self.task_names:
                known = ", ".join(sorted(self.task_names)) or "none yet"
                raise UsageError(f"--after {name}: no task of that name ran (known: {known})")
            upstream_keys.add(self.task_names[name])
        self._remember_upstream_prints(upstream_keys)
        return upstream_keys

    def cache_key(
        self,
        analysis: CellAnalysis,
        inputs: list[str],
        name: str,
        parameters: dict[str, Any],
    ) -> str | None:
        """Return the cell's cache key, or None (and say why) when it cannot be cached."""
        if analysis.star_import:
            print(f"nbflow: {name}: cache off (a star import has unknown outputs)", file=sys.stderr)
            return None
        ns = self.shell.user_ns
        try:
            prints = fingerprint_inputs({n: ns[n] for n in inputs})
        except Unfingerprintable as exc:
            print(f"nbflow: {name}: cache off for this run: {exc}", file=sys.stderr)
            return None
        return cell_cache_key(analysis.normalized_source, prints, parameters)

    def record(
        self, key: str, inputs: list[str], analysis: CellAnalysis, state: State
    ) -> list[str]:
        """Record a task cell's run; return the downstream task keys its new outputs made stale."""
        self.task_inputs[key] = tuple(inputs)
        if not state.is_final_success:
            return []
        for name in analysis.outputs:
            self.producers[name] = key
        for name in analysis.deleted:
            self.producers.pop(name, None)
        self.task_outputs[key] = analysis.outputs
        dependents = [
            k
            for k, ins in self.task_inputs.items()
            if k != key and any(self.producers.get(n) == key for n in ins)
        ]
        if not dependents:
            self.output_prints.pop(key, None)
            return []
        before = self.output_prints.get(key)
        now_print = self._outputs_print(analysis.outputs)
        self.output_prints[key] = now_print
        return dependents if now_print is None or before != now_print else []

    def _outputs_print(self, names: tuple[str, ...]) -> str | None:
        ns = self.shell.user_ns
        try:
            return str(fingerprint_inputs({n: ns[n] for n in names if n in ns}))
        except Unfingerprintable:
            return None

    def _remember_upstream_prints(self, upstream_keys: set[str]) -> None:
        """Fingerprint an upstream task's outputs the first time a task depends on them.

        Only tasks with dependents are fingerprinted, so cells nobody reads cost nothing.
        """
        for key in upstream_keys:
            if key not in self.output_prints and key in self.task_outputs:
                self.output_prints[key] = self._outputs_print(self.task_outputs[key])
