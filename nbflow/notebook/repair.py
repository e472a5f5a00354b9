"""Batch runs persist their ``%%task`` cells; a repair restores them instead of running them.

In a batch run (``nbflow execute``) every completed ``%%task`` cell persists, through the
engine's result storage (``persist_result``; the task run's Completed state names the
``result_key``), a record of what it did:

- its output variables, each pickled (cloudpickle), and the names it deleted;
- its displayed outputs as nbformat outputs (streams, displays, its result), recorded
  while they are shown;
- its *cell key*: a digest of its normalized code and the fingerprints of its inputs as
  they were before it ran (:func:`nbflow.engine.fingerprint.cell_cache_key`, without the
  run's parameters: a cell that reads a parameter has it among its inputs).

A record that cannot restore the cell says why (an output that cannot be pickled, outputs
over ``NBFLOW_BATCH_RESULTS_MAX_BYTES``, an input that cannot be fingerprinted); the
cell's task run logs that line.  A run retried ``from_failed`` carries a
:class:`~nbflow.orchestration.repair.RepairPlan` in its first state; its kernel restores
each ``%%task`` cell whose key is in the plan and whose cell key is unchanged: the
variables go back into the namespace, the recorded outputs are shown again (so the output
notebook holds them), and the task run is ``Cached`` with where it came from.  Anything
else runs: plain cells always, and every task cell from the first that cannot be restored.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from nbflow.engine.fingerprint import Unfingerprintable, cell_cache_key, fingerprint_inputs
from nbflow.engine.results import ResultRecord, get_result_store
from nbflow.notebook.cells import CellAnalysis
from nbflow.orchestration.repair import RepairPlan, RestorableTask

__all__ = ["BatchCells", "OutputRecorder", "Restorable", "cell_key", "replay_outputs"]

log = logging.getLogger("nbflow.notebook.repair")


def cell_key(
    analysis: CellAnalysis, ns: Mapping[str, Any], inputs: list[str]
) -> tuple[str | None, str | None]:
    """Return ``(key, None)`` for a cell's code and inputs, or ``(None, why)`` without one."""
    if analysis.star_import:
        return None, "it has a star import (its outputs are unknown)"
    try:
        prints = fingerprint_inputs({n: ns[n] for n in inputs})
    except Unfingerprintable as exc:
        return None, f"its input {exc.name!r} ({exc.type_name}) cannot be fingerprinted"
    return cell_cache_key(analysis.normalized_source, prints, {}), None


# -- recording a cell's displayed outputs ------------------------------------------------


class _Tee:
    """A text stream writing through to ``target`` and recording what it wrote."""

    def __init__(self, target: TextIO, recorder: OutputRecorder, name: str) -> None:
        self._target, self._recorder, self._name = target, recorder, name

    def write(self, text: str) -> int:
        written = self._target.write(text)
        if text:
            self._recorder.stream(self._name, text)
        return written

    def flush(self) -> None:
        self._target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class OutputRecorder:
    """Record the outputs a cell shows (as nbformat dicts) while they are shown as usual."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.outputs: list[dict[str, Any]] = []
        self.size = 0
        self._saved: tuple[Any, Any, dict[str, Any]] = (None, None, {})

    def stream(self, name: str, text: str) -> None:
        """Record stream text, merged into the previous output of the same stream."""
        self.size += len(text)
        last = self.outputs[-1] if self.outputs else None
        if last is not None and last["output_type"] == "stream" and last["name"] == name:
            last["text"] += text
        else:
            self.outputs.append({"output_type": "stream", "name": name, "text": text})

    def display(self, data: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> None:
        """Record a displayed value (``display_data``)."""
        output = {
            "output_type": "display_data",
            "data": dict(data),
            "metadata": dict(metadata or {}),
        }
        self.size += len(json.dumps(output, default=str))
        self.outputs.append(output)

    def result(self, data: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> None:
        """Record the cell's result (``execute_result``)."""
        self.display(data, metadata)
        self.outputs[-1]["output_type"] = "execute_result"

    def __enter__(self) -> OutputRecorder:
        pub = getattr(self.shell, "display_pub", None)
        own = {n: vars(pub)[n] for n in ("publish", "clear_output") if pub and n in vars(pub)}
        self._saved = (sys.stdout, sys.stderr, own)
        sys.stdout = _Tee(sys.stdout, self, "stdout")  # type: ignore[assignment]
        sys.stderr = _Tee(sys.stderr, self, "stderr")  # type: ignore[assignment]
        if pub is not None:
            publish, clear = pub.publish, pub.clear_output

            def recording_publish(data: Any, metadata: Any = None, *args: Any, **kw: Any) -> Any:
                if not kw.get("update"):
                    self.display(data, metadata)
                return publish(data, metadata, *args, **kw)

            def recording_clear(*args: Any, **kw: Any) -> Any:
                self.outputs.clear()
                return clear(*args, **kw)

            pub.publish, pub.clear_output = recording_publish, recording_clear
        return self

    def __exit__(self, *exc: object) -> None:
        stdout, stderr, own = self._saved
        sys.stdout, sys.stderr = stdout, stderr
        pub = getattr(self.shell, "display_pub", None)
        if pub is not None:
            for name in ("publish", "clear_output"):
                if name in own:
                    setattr(pub, name, own[name])
                else:
                    vars(pub).pop(name, None)


def replay_outputs(outputs: list[dict[str, Any]]) -> None:
    """Show recorded outputs again, in order (a result is shown as a display)."""
    from IPython import display as ipython_display

    publish: Any = ipython_display.publish_display_data
    for output in outputs:
        if output.get("output_type") == "stream":
            stream = sys.stderr if output.get("name") == "stderr" else sys.stdout
            stream.write(str(output.get("text", "")))
            stream.flush()
        elif output.get("data"):
            sys.stdout.flush()
            publish(output["data"], output.get("metadata") or {})


# -- restoring from a repair plan --------------------------------------------------------


@dataclass(frozen=True)
class Restorable:
    """A task cell a repair restores: the task run it comes from and its persisted record."""

    task: RestorableTask
    from_flow_run_id: Any
    value: dict[str, Any]


class BatchCells:
    """A batch run's kernel side of repair: persist each task cell, restore from the plan."""

    def __init__(self, plan: RepairPlan | None, max_bytes: int) -> None:
        self.plan = plan
        #: Largest pickled outputs (plus recorded outputs) persisted per cell; 0: none.
        self.max_bytes = max_bytes

    @property
    def persists(self) -> bool:
        """Whether task cells persist their outputs (``NBFLOW_BATCH_RESULTS_MAX_BYTES`` > 0)."""
        return self.max_bytes > 0

    def restorable(
        self, task_key: str, key: str | None, why_no_key: str | None
    ) -> tuple[Restorable | None, str | None]:
        """Return what restores ``task_key`` with cell key ``key``, or why it runs instead.

        ``(None, None)``: the repaired run did not complete the cell (nothing to say).
        """
        if self.plan is None:
            return None, None
        task = self.plan.tasks.get(task_key)
        if task is None:
            return None, None
        source = f"flow run {self.plan.from_flow_run_id}"
        if key is None:
            return None, f"not restored from {source}: {why_no_key}"
        try:
            record: ResultRecord | None = get_result_store().read(task.result_key)
        except Exception as exc:  # a bad key or an unreachable store: run the cell
            record, error = None, f"{type(exc).__name__}: {exc}"
        else:
            error = "its persisted outputs are missing or unreadable"
        value = record.value if record is not None else None
        if not isinstance(value, dict) or "cell_key" not in value:
            return None, f"not restored from {source}: {error} (result {task.result_key})"
        if value.get("unrestorable"):
            return None, f"not restored from {source}: {value['unrestorable']}"
        if value["cell_key"] != key:
            return None, f"not restored from {source}: its code or inputs changed since"
        return Restorable(task, self.plan.from_flow_run_id, value), None

    def finish_value(
        self,
        value: dict[str, Any],
        key: str | None,
        why_no_key: str | None,
        size: int,
        *,
        keep: bool = False,
    ) -> tuple[dict[str, Any], str | None]:
        """Complete the record a cell persists; return it and why it cannot restore the cell.

        ``size`` is the pickled outputs' size plus the recorded outputs'.  Outputs over the
        size cap are dropped, unless ``keep`` (the ``--cache`` record); otherwise a record
        that cannot restore the cell keeps what was pickled (``%nbflow load`` loads it).
        """
        why = value.pop("unpicklable", None) or why_no_key
        if size > self.max_bytes:
            over = (
                f"its outputs take {size} bytes, over NBFLOW_BATCH_RESULTS_MAX_BYTES="
                f"{self.max_bytes}"
            )
            why = f"{why}; {over}" if why else over
            if not keep:
                value = {"outputs": {}, "deleted": [], "display": None, "cell_outputs": []}
        value["cell_key"] = key
        value["unrestorable"] = why
        return value, why
