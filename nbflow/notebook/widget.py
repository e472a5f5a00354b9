"""The live state widget of one flow run (ipywidgets), with a static HTML fallback.

:class:`FlowRunWidget` receives engine events (:mod:`nbflow.engine.events`) from any thread.
Events only update an in-memory table under a lock; the widgets are redrawn by one
deferred flush at most every ``min_interval`` seconds (latest state wins), so a burst of
task states never floods the frontend.  ``_repr_mimebundle_`` returns the widget view *and*
a ``text/html`` summary, so nbconvert/papermill output and frontends without a widget
manager still show a readable table; :meth:`FlowRunWidget.refresh_display` rewrites that
summary (call it from the kernel's main thread, e.g. at the end of a cell).
"""

from __future__ import annotations

import heapq
import html
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

import ipywidgets as widgets

from nbflow.states import State, StateType

__all__ = ["FlowRunWidget", "TaskRow"]

log = logging.getLogger("nbflow.notebook.widget")

#: Background colour of each state (by name first, then by type).
COLOURS: dict[str, str] = {
    "Cached": "#2a9d8f",
    "TimedOut": "#b5179e",
    "Retrying": "#4361ee",
    "AwaitingRetry": "#f4a261",
    "NotReady": "#adb5bd",
    StateType.COMPLETED: "#2d6a4f",
    StateType.RUNNING: "#4361ee",
    StateType.FAILED: "#d00000",
    StateType.CRASHED: "#6a040f",
    StateType.CANCELLED: "#6c757d",
    StateType.CANCELLING: "#adb5bd",
    StateType.PENDING: "#adb5bd",
    StateType.SCHEDULED: "#ced4da",
    StateType.PAUSED: "#ffb703",
}

#: Inline style of every table cell (inline, so the static HTML summary looks the same).
_CELL = "padding:1px 10px 1px 0;"


Scheduler = Callable[[float, Callable[[], None]], None]


class _Flusher:
    """One daemon thread that runs deferred flushes at their due time (for every widget).

    (A ``threading.Timer`` per flush costs a thread start each time: milliseconds on a busy
    machine, paid on every task state change.)
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._thread: threading.Thread | None = None

    def __call__(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._due, (time.monotonic() + delay, self._seq, fn))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="nbflow-widget", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.monotonic():
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._cond.wait(timeout)
                _, _, fn = heapq.heappop(self._due)
            try:
                fn()
            except Exception:
                log.exception("nbflow widget flush failed")


_timer = _Flusher()


def colour(state: State | None) -> str:
    """Return the colour shown for ``state``."""
    if state is None:
        return COLOURS[StateType.PENDING]
    return COLOURS.get(state.name) or COLOURS[state.type]


@dataclass(frozen=True)
class TaskRow:
    """What the widget shows for one task (the latest run of a task key)."""

    task_key: str
    name: str
    task_run_id: UUID
    state: State | None
    run_count: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    stale: bool = False

    @property
    def duration(self) -> float | None:
        """Seconds the task ran (so far, while running)."""
        if self.start_time is None:
            return None
        end = self.end_time or (self.state.timestamp if self.state else None)
        return max(0.0, (end - self.start_time).total_seconds()) if end else None

    @property
    def retries(self) -> int:
        """How many times the task was retried."""
        return max(0, self.run_count - 1)

    @property
    def cached(self) -> bool:
        """Whether the result came from the cache."""
        return self.state is not None and self.state.name == "Cached"

    @property
    def error(self) -> str:
        """A one-line error summary for failed and crashed states."""
        if self.state is None or self.state.type not in (
            StateType.FAILED,
            StateType.CRASHED,
            StateType.CANCELLED,
        ):
            return ""
        message = (self.state.message or "").strip().splitlines()
        return message[-1][:200] if message else ""


class FlowRunWidget:
    """Live view of one flow run: tasks, progress, flow state and a Cancel button."""

    def __init__(
        self,
        flow_run_id: UUID,
        flow_name: str,
        *,
        run_name: str = "",
        on_cancel: Callable[[], None] | None = None,
        min_interval: float = 0.1,
        scheduler: Scheduler = _timer,
    ) -> None:
        self.flow_run_id, self.flow_name, self.run_name = flow_run_id, flow_name, run_name
        self.flow_state: State | None = None
        self.rows: dict[str, TaskRow] = {}
        self._row_html: dict[str, tuple[TaskRow, str]] = {}
        self.flush_count = 0
        self._on_cancel = on_cancel
        self._min_interval, self._scheduler = min_interval, scheduler
        self._lock = threading.RLock()
        self._dirty = False
        self._flush_pending = False
        self._last_flush = 0.0
        self._display: Any = None
        self.header = widgets.HTML()
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="tasks")
        self.table = widgets.HTML()
        self.cancel_button = widgets.Button(
            description="Cancel run", button_style="warning", icon="stop"
        )
        self.cancel_button.on_click(lambda _button: self.cancel())
        self.view = widgets.VBox(
            [self.header, widgets.HBox([self.progress, self.cancel_button]), self.table]
        )
        self._apply()

    # -- input (any thread)
    def handle(self, event: Any) -> None:
        """Take one engine event (FlowRunEvent or TaskRunEvent) of this flow run."""
        if getattr(event, "flow_run_id", None) != self.flow_run_id:
            return
        task_run = getattr(event, "task_run", None)
        with self._lock:
            if task_run is None:
                self.flow_state = event.state
            else:
                old = self.rows.get(task_run.task_key)
                if (
                    old is not None
                    and old.task_run_id != task_run.id
                    and old.state is not None
                    and old.state.timestamp > event.state.timestamp
                ):
                    return  # a late event of an older run of this task
                self.rows[task_run.task_key] = TaskRow(
                    task_key=task_run.task_key,
                    name=task_run.name,
                    task_run_id=task_run.id,
                    state=event.state,
                    run_count=task_run.run_count,
                    start_time=task_run.start_time,
                    end_time=task_run.end_time,
                    stale=False,
                )
            self._dirty = True
            terminal = task_run is None and event.state.is_terminal
        self._request_flush(immediate=terminal)

    def mark_stale(self, task_keys: list[str]) -> None:
        """Flag tasks whose inputs changed since they ran (until they run again)."""
        with self._lock:
            for key in task_keys:
                row = self.rows.get(key)
                if row is not None:
                    self.rows[key] = replace(row, stale=True)
            self._dirty = True
        self._request_flush()

    def cancel(self) -> None:
        """Ask the flow run to stop (the Cancel button)."""
        self.cancel_button.disabled = True
        self.cancel_button.description = "Cancelling..."
        if self._on_cancel is not None:
            self._on_cancel()

    # -- coalescing
    def _request_flush(self, immediate: bool = False) -> None:
        with self._lock:
            if immediate:
                self._flush_pending = False
            elif self._flush_pending:
                return
            else:
                self._flush_pending = True
                delay = max(0.0, self._last_flush + self._min_interval - time.monotonic())
        if immediate:
            self.flush()
        else:
            self._scheduler(delay, self.flush)

    def flush(self) -> None:
        """Redraw the widgets from the latest state (no-op when nothing changed)."""
        with self._lock:
            self._flush_pending = False
            if not self._dirty:
                return
            self._dirty = False
            self._last_flush = time.monotonic()
            self.flush_count += 1
            self._apply()

    def _apply(self) -> None:
        rows = list(self.rows.values())
        done = sum(1 for r in rows if r.state is not None and r.state.is_terminal)
        self.progress.max = max(1, len(rows))
        self.progress.value = done
        self.progress.bar_style = (
            "danger"
            if any(r.state and r.state.type in (StateType.FAILED, StateType.CRASHED) for r in rows)
            else "success"
            if rows and done == len(rows)
            else "info"
        )
        self.header.value = self._header_html()
        self.table.value = self._table_html(rows)
        finished = self.flow_state is not None and self.flow_state.is_terminal
        if finished:
            self.cancel_button.disabled = True
            self.cancel_button.description = "Run finished"

    # -- rendering
    def _header_html(self) -> str:
        state = self.flow_state
        badge = _badge(state.name if state else "Starting", colour(state))
        run = f" <code>{html.escape(self.run_name)}</code>" if self.run_name else ""
        return (
            f"<div><b>flow {html.escape(self.flow_name)}</b>{run} {badge} "
            f'<span style="color:#6c757d">{self.flow_run_id}</span></div>'
        )

    def _table_html(self, rows: list[TaskRow]) -> str:
        if not rows:
            return "<i>no task ran yet</i>"
        head = "".join(
            f'<th align={align} style="{_CELL}border-bottom:1px solid #ced4da">{title}</th>'
            for title, align in (
                ("task", "left"),
                ("state", "left"),
                ("duration", "right"),
                ("retries", "right"),
                ("cache", "left"),
                ("error", "left"),
            )
        )
        lines = [
            '<table style="border-collapse:collapse;font-size:0.9em;line-height:1.6">',
            f"<tr>{head}</tr>",
        ]
        for row in rows:
            cached = self._row_html.get(row.task_key)
            if cached is None or cached[0] is not row:
                cached = (row, _row_html(row))
                self._row_html[row.task_key] = cached
            lines.append(cached[1])
        lines.append("</table>")
        return "\n".join(lines)

    def to_html(self) -> str:
        """Return the static HTML summary (header, progress, task table)."""
        with self._lock:
            rows = list(self.rows.values())
            done = sum(1 for r in rows if r.state is not None and r.state.is_terminal)
            return (
                f'<div class="nbflow-flow-run">{self._header_html()}'
                f"<div>{done}/{len(rows)} tasks finished</div>{self._table_html(rows)}</div>"
            )

    def to_text(self) -> str:
        """Return a plain-text summary."""
        with self._lock:
            state = self.flow_state.name if self.flow_state else "Starting"
            lines = [f"flow {self.flow_name} [{state}] {self.flow_run_id}"]
            for row in self.rows.values():
                name = row.state.name if row.state else "Pending"
                extra = f" ({row.error})" if row.error else ""
                stale = " [stale: an input changed]" if row.stale else ""
                cached = " [cache hit]" if row.cached else ""
                lines.append(f"  {row.name}: {name}{extra}{cached}{stale}")
            return "\n".join(lines)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": self.to_text(), "text/html": self.to_html()}
        # built by hand: ipywidgets' own bundle also renders a deep repr() of every trait
        bundle["application/vnd.jupyter.widget-view+json"] = {
            "version_major": 2,
            "version_minor": 0,
            "model_id": self.view.model_id,
        }
        return bundle

    # -- display (kernel main thread)
    def display(self) -> None:
        """Show the widget in the current cell output."""
        from IPython import display as ipython_display

        show: Any = ipython_display.display
        self._display = show(self, display_id=True)

    def refresh_display(self) -> None:
        """Flush and rewrite the displayed output (keeps the static HTML up to date)."""
        self.flush()
        if self._display is not None:
            self._display.update(self)

    def close(self) -> None:
        """Release the frontend widgets."""
        for child in (self.header, self.progress, self.table, self.cancel_button, self.view):
            child.close()


def _row_html(row: TaskRow) -> str:
    duration = f"{row.duration:.2f} s" if row.duration is not None else ""
    name = row.state.name if row.state else "Pending"
    stale = (
        ' <span style="color:#e76f51;font-style:italic" title="an input changed since it ran">'
        "stale</span>"
        if row.stale
        else ""
    )
    td = f'<td style="{_CELL}"'
    return (
        f"<tr>{td}>{html.escape(row.name)}{stale}</td>"
        f"{td}>{_badge(name, colour(row.state))}</td>"
        f"{td} align=right>{duration}</td>{td} align=right>{row.retries}</td>"
        f"{td}>{'hit' if row.cached else ''}</td>"
        f"{td}><code>{html.escape(row.error)}</code></td></tr>"
    )


def _badge(text: str, background: str) -> str:
    return (
        f'<span style="background:{background};color:white;border-radius:3px;'
        f'padding:0 4px">{html.escape(text)}</span>'
    )
