"""The task function of a ``%%task`` cell: run its code in the user namespace.

The cell is compiled once (top-level ``await`` allowed, the last expression displayed as
IPython would); with caching on, its outputs are pickled for the cache and a cache hit
puts them back.  A failure's traceback starts at the cell's first line.
"""

from __future__ import annotations

import ast
import sys
import types
from typing import Any

import cloudpickle

from nbflow.notebook.cell_logs import MAX_RECORD_CHARS, CellOutputLog
from nbflow.notebook.cells import CellAnalysis

__all__ = ["CellRunner"]


class CellRunner:
    """The task function of a ``%%task`` cell: execute its code in the user namespace."""

    def __init__(self, shell: Any, cell: str, analysis: CellAnalysis, for_cache: bool) -> None:
        self.shell, self.analysis, self.for_cache = shell, analysis, for_cache
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
        with CellOutputLog() as output_log:
            self._eval(self.body)
            if self.last is not None:
                value = self._eval(self.last)
                if value is not None:
                    self.shell.displayhook(value)
                    if self.for_cache:
                        display = self.shell.display_formatter.format(value)
                    output_log.result(self._plain_text(value))
        outputs = {n: ns[n] for n in self.analysis.outputs if n in ns}
        if self.for_cache:
            outputs = self._pickled(outputs)
        return {"outputs": outputs, "deleted": list(self.analysis.deleted), "display": display}

    def _pickled(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """Pickle each output for the cache; leave out (and say so) what cannot be pickled."""
        pickled: dict[str, bytes] = {}
        for name, value in outputs.items():
            if isinstance(value, types.ModuleType):
                pickled[name] = cloudpickle.dumps(value)
                continue
            try:
                pickled[name] = cloudpickle.dumps(value)
            except Exception as exc:
                print(
                    f"nbflow: output {name!r} ({type(value).__name__}) cannot be cached "
                    f"({type(exc).__name__}); a cache hit will not restore it",
                    file=sys.stderr,
                )
        return pickled

    def restore(self, value: Any) -> None:
        """Put a cached cell's outputs back into the namespace and re-show its result."""
        ns = self.shell.user_ns
        for name, data in value.get("outputs", {}).items():
            ns[name] = cloudpickle.loads(data)
        for name in value.get("deleted", ()):
            ns.pop(name, None)
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
