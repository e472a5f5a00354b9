"""The task function of a ``%%task`` cell: run its code in the user namespace.

The cell is compiled once (top-level ``await`` allowed, the last expression displayed as
IPython would); with caching on, its outputs are pickled for the cache and a cache hit
puts them back.  In a batch run the outputs are pickled too and the displayed outputs
recorded, for a repair of the run (:mod:`nbflow.notebook.repair`).  A failure's traceback
starts at the cell's first line.
"""

from __future__ import annotations

import ast
import contextlib
import sys
import types
from collections.abc import Callable
from typing import Any

import cloudpickle

from nbflow.notebook.cell_logs import MAX_RECORD_CHARS, CellOutputLog
from nbflow.notebook.cells import CellAnalysis
from nbflow.notebook.repair import OutputRecorder

#: Completes a batch run's record of the cell: (value, size in bytes) -> the value to persist.
Persist = Callable[[dict[str, Any], int], dict[str, Any]]

__all__ = ["CellRunner"]


class CellRunner:
    """The task function of a ``%%task`` cell: execute its code in the user namespace."""

    def __init__(
        self,
        shell: Any,
        cell: str,
        analysis: CellAnalysis,
        for_cache: bool,
        persist: Persist | None = None,
    ) -> None:
        self.shell, self.analysis, self.for_cache = shell, analysis, for_cache
        #: A batch run's: the outputs are pickled, the displayed ones recorded, then this.
        self.persist = persist
        self.__name__ = "cell"
        source = shell.transform_cell(cell)
        self.filename = shell.compile.cache(source, shell.execution_count, raw_code=cell)
        tree = ast.parse(source, filename=self.filename)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        flags = shell.compile.flags | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self.body = compile(tree, self.filename, "exec", flags=flags, dont_inherit=True)
        self.last = (
            compile(
                ast.Expression(last.value), self.filename, "eval", flags=flags, dont_inherit=True
            )
            if last is not None
            else None
        )

    def _eval(self, code: types.CodeType) -> Any:
        ns = self.shell.user_ns
        result = eval(code, ns)
        if code.co_flags & 0x80:  # CO_COROUTINE: top-level await
            from nbflow.engine import loop

            result = loop.run_coroutine(result)
        return result

    def __call__(self) -> dict[str, Any]:
        ns = self.shell.user_ns
        display: Any = None
        recorder = OutputRecorder(self.shell) if self.persist is not None else None
        with CellOutputLog() as output_log, recorder or contextlib.nullcontext():
            self._eval(self.body)
            if self.last is not None:
                value = self._eval(self.last)
                if value is not None:
                    self.shell.displayhook(value)
                    if self.for_cache or recorder is not None:
                        display = self.shell.display_formatter.format(value)
                    if recorder is not None and display and display[0]:
                        recorder.result(*display)
                    output_log.result(self._plain_text(value))
        outputs = {n: ns[n] for n in self.analysis.outputs if n in ns}
        result: dict[str, Any] = {"deleted": list(self.analysis.deleted), "display": display}
        if self.for_cache or recorder is not None:
            pickled, unpicklable = self._pickled(outputs)
            result["outputs"] = pickled
            if recorder is not None and self.persist is not None:
                result["cell_outputs"] = recorder.outputs
                result["unpicklable"] = unpicklable
                size = sum(len(b) for b in pickled.values()) + recorder.size
                result = self.persist(result, size)
        else:
            result["outputs"] = outputs
        return result

    def _pickled(self, outputs: dict[str, Any]) -> tuple[dict[str, bytes], str | None]:
        """Pickle each output; leave out what cannot be pickled and return why.

        With ``--cache`` the cell's stderr says so (a cache hit will not restore it).
        """
        pickled: dict[str, bytes] = {}
        why: str | None = None
        for name, value in outputs.items():
            try:
                pickled[name] = cloudpickle.dumps(value)
            except Exception as exc:
                why = why or (
                    f"output {name!r} ({type(value).__name__}) cannot be pickled "
                    f"({type(exc).__name__}: {exc})"
                )
                if self.for_cache:
                    print(
                        f"nbflow: output {name!r} ({type(value).__name__}) cannot be cached "
                        f"({type(exc).__name__}); a cache hit will not restore it",
                        file=sys.stderr,
                    )
        return pickled, why

    def restore_namespace(self, value: Any) -> None:
        """Put a persisted cell's output variables back and drop the names it deleted."""
        ns = self.shell.user_ns
        for name, data in value.get("outputs", {}).items():
            ns[name] = cloudpickle.loads(data)
        for name in value.get("deleted", ()):
            ns.pop(name, None)

    def restore(self, value: Any) -> None:
        """Put a cached cell's outputs back into the namespace and re-show its result."""
        self.restore_namespace(value)
        if value.get("display"):
            from IPython import display as ipython_display

            publish: Any = ipython_display.publish_display_data
            data, metadata = value["display"]
            publish(data, metadata)

    def _plain_text(self, value: Any) -> str:
        """Return the ``text/plain`` of the cell's result, as the cell shows it."""
        try:
            text = self.shell.display_formatter.formatters["text/plain"](value)
        except Exception as exc:  # a broken __repr__ must not fail the cell
            return f"<{type(value).__name__}: repr failed: {exc}>"
        return str(text)[: MAX_RECORD_CHARS + 1]

    def prepare_traceback(self, exc: BaseException, note: str | None = None) -> None:
        """Make IPython show the traceback from the cell's first line, without nbflow frames.

        (IPython's own ``__tracebackhide__`` would still print a "skipping hidden frames"
        line per group and keep the last frame, so the traceback is cut here instead.)
        When no frame is the cell's (an interrupt between two lines of nbflow), only the
        exception line and ``note`` are shown.
        """
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != self.filename:
            tb = tb.tb_next
        if tb is not None:
            lines = list(self.shell.InteractiveTB.structured_traceback(type(exc), exc, tb))
        else:
            lines = [f"{type(exc).__name__}: {exc}".rstrip(": ")]
        if note:
            lines.append(note)
        try:
            exc._render_traceback_ = lambda: lines  # type: ignore[attr-defined]
        except AttributeError:
            pass
