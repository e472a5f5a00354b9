"""A ``%%task`` cell's output as log records of its task run.

While the cell runs, ``sys.stdout`` and ``sys.stderr`` are teed: everything still reaches
the cell's output as usual, and is also shipped to the run's logs (stdout as INFO, stderr
as WARNING) under the task run's id, so ``nbflow runs logs`` and the panel show
"fetched 140 rows" next to the engine's own records.  The cell's displayed result is
logged too (its ``text/plain``).  Text is sent at most once a second while the cell runs
and at its end, each record cut to :data:`MAX_RECORD_CHARS` characters.  The same code
runs in a live kernel and in the kernel of a batch run (``nbflow execute``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

from nbflow.engine.context import task_run_context
from nbflow.schemas import Log

__all__ = ["MAX_RECORD_CHARS", "CellOutputLog", "truncate"]

#: The longest log record a cell's output makes (the rest is cut, saying how much).
MAX_RECORD_CHARS = 10_000

#: Seconds between two records of one stream while the cell runs.
FLUSH_SECONDS = 1.0


def truncate(text: str, limit: int = MAX_RECORD_CHARS) -> str:
    """Cut ``text`` to ``limit`` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n... ({len(text) - limit} more characters not logged)"


class _Tee:
    """A text stream that writes through to ``target`` and keeps lines for the log."""

    def __init__(self, target: TextIO, owner: CellOutputLog, level: int, logger: str) -> None:
        self._target, self._owner = target, owner
        self.level, self.logger = level, logger
        self.buffer_text: list[str] = []
        self.size = 0
        self.last = time.monotonic()

    def write(self, text: str) -> int:
        written = self._target.write(text)
        if text:
            self._owner.collect(self, text)
        return written

    def flush(self) -> None:
        self._target.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, encoding, fileno, ...: the target's
        return getattr(self._target, name)


class CellOutputLog:
    """Tee the cell's stdout/stderr into log records of the current task run (a context)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._saved: tuple[TextIO, TextIO] | None = None
        self._tees: list[_Tee] = []

    def __enter__(self) -> CellOutputLog:
        ctx = task_run_context.get()
        if ctx is None:  # not inside a task run: nothing to log to
            return self
        self._sink, self._task_run = ctx.sink, ctx.task_run
        self._saved = (sys.stdout, sys.stderr)
        out = _Tee(sys.stdout, self, logging.INFO, "nbflow.cell.stdout")
        err = _Tee(sys.stderr, self, logging.WARNING, "nbflow.cell.stderr")
        self._tees = [out, err]
        sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._saved is None:
            return
        sys.stdout, sys.stderr = self._saved
        self._saved = None
        for tee in self._tees:
            self._send(tee)

    def collect(self, tee: _Tee, text: str) -> None:
        """Keep ``text``; send what was kept when a line ended and a second has passed."""
        with self._lock:
            tee.buffer_text.append(text)
            tee.size += len(text)
            due = "\n" in text and (
                tee.size >= MAX_RECORD_CHARS or time.monotonic() - tee.last >= FLUSH_SECONDS
            )
        if due:
            self._send(tee)

    def result(self, text: str) -> None:
        """Log the cell's displayed result (its ``text/plain``)."""
        if self._tees and text:
            self._emit(logging.INFO, "nbflow.cell.result", text)

    def _send(self, tee: _Tee) -> None:
        with self._lock:
            text = "".join(tee.buffer_text)
            tee.buffer_text.clear()
            tee.size = 0
            tee.last = time.monotonic()
        text = text.rstrip("\n")
        if text.strip():
            self._emit(tee.level, tee.logger, text)

    def _emit(self, level: int, logger: str, text: str) -> None:
        run = self._task_run
        self._sink.log(
            Log(
                flow_run_id=run.flow_run_id,
                task_run_id=run.id,
                level=level,
                logger=logger,
                message=truncate(text),
            )
        )
