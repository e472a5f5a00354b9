"""The live state widget of one flow run (ipywidgets), with a static HTML fallback.

:class:`FlowRunWidget` receives engine events (:mod:`nbflow.engine.events`) from any thread.
Events only update an in-memory table under a lock; the widgets are redrawn by one
deferred flush at most every ``min_interval`` seconds (latest state wins), so a burst of
task states never floods the frontend.  ``_repr_mimebundle_`` returns the widget view *and*
a ``text/html`` summary, so nbconvert/papermill output and frontends without a widget
manager still show a readable table; :meth:`FlowRunWidget.refresh_display` rewrites that
summary (call it from the kernel's main thread, e.g. at the end of a cell).

While a task runs, the widget redraws itself about once a second (from the flush thread,
so the kernel's main thread never polls) to show the running task's and the run's live
duration; the ticking stops as soon as no task runs.  A plain ipywidgets ``HTML`` cannot
run a timer in the browser, hence the kernel-side tick.
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

from nbflow.states import State, StateType, now

__all__ = ["SUMMARY_KEY", "FlowRunWidget", "TaskRow", "format_seconds", "plural"]

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

#: Key of the output metadata that marks a run's summary (see nbflow.notebook.summary).
SUMMARY_KEY = "nbflow"

#: Seconds between two redraws while a task runs (the live durations).
TICK_SECONDS = 1.0


#: CSS class of the widget's Cancel button (the JupyterLab extension's click hook).
CANCEL_BUTTON_CLASS = "nbflow-cancel-run"


def plural(count: int, word: str, many: str | None = None) -> str:
    """Return ``"1 retry"``, ``"2 retries"``: the count with the word in the right number."""
    if count == 1:
        return f"1 {word}"
    return f"{count} {many or word + 's'}"


def format_seconds(seconds: float) -> str:
    """Return a duration as people read it: ``0.42 s``, ``12.3 s``, ``2 min 05 s``, ``1 h 02 min``."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


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
    def running(self) -> bool:
        """Whether the task is running now (a first attempt or a retry)."""
        return self.state is not None and self.state.type is StateType.RUNNING

    @property
    def duration(self) -> float | None:
        """Seconds the task ran (until its latest state, while running)."""
        if self.start_time is None:
            return None
        end = self.end_time or (self.state.timestamp if self.state else None)
        return max(0.0, (end - self.start_time).total_seconds()) if end else None

    def elapsed(self, at: datetime) -> float | None:
        """Seconds the task ran, counting up to ``at`` while it runs."""
        if self.running and self.start_time is not None and self.end_time is None:
            return max(0.0, (at - self.start_time).total_seconds())
        return self.duration

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
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.flow_run_id, self.flow_name, self.run_name = flow_run_id, flow_name, run_name
        self.flow_state: State | None = None
        #: When the run entered Running, and when it ended (for its total duration).
        self.run_started: datetime | None = None
        self.run_ended: datetime | None = None
        self._clock = clock
        self._tick_pending = False
        self._cancel_requested = False
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
        # JupyterLab's nbflow extension finds the button by these classes and cancels
        # through the server at once: the click's comm message waits for a busy kernel.
        self.cancel_button.add_class(CANCEL_BUTTON_CLASS)
        self.cancel_button.add_class(f"nbflow-run-{flow_run_id}")
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
                if event.state.type is StateType.RUNNING and self.run_started is None:
                    self.run_started = event.state.timestamp
                if event.state.is_terminal:
                    self.run_ended = event.state.timestamp
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
        with self._lock:
            self._cancel_requested = True
            self._apply_button()
        if self._on_cancel is not None:
            self._on_cancel()

    @property
    def finished(self) -> bool:
        """Whether the run reached a terminal state."""
        return self.flow_state is not None and self.flow_state.is_terminal

    def _something_runs(self) -> bool:
        return not self.finished and any(r.running for r in self.rows.values())

    def _tick(self) -> None:
        """Redraw the live durations; keep ticking only while a task runs."""
        with self._lock:
            self._tick_pending = False
            if not self._something_runs():
                return
            self._dirty = True
        self.flush()

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
            tick = self._something_runs() and not self._tick_pending
            if tick:
                self._tick_pending = True
        if tick:
            self._scheduler(TICK_SECONDS, self._tick)

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
        at = self._clock()
        self.header.value = self._header_html(at)
        self.table.value = self._table_html(rows, at)
        self._apply_button()

    def _apply_button(self) -> None:
        """Show the button that fits the state: Cancel while running, nothing once finished."""
        button = self.cancel_button
        if self.finished:
            button.disabled = True
            button.description = "Run finished"
            button.button_style = ""
            button.icon = ""
            button.layout.display = "none"
        elif self._cancel_requested or (
            self.flow_state is not None and self.flow_state.type is StateType.CANCELLING
        ):
            button.disabled = True
            button.description = "Cancelling..."
            button.button_style = ""
            button.icon = "hourglass-half"

    def run_duration(self, at: datetime | None = None) -> float | None:
        """Seconds since the run started: until it ended, or until ``at`` (now) while it runs."""
        if self.run_started is None:
            return None
        end = self.run_ended or at or self._clock()
        return max(0.0, (end - self.run_started).total_seconds())

    # -- rendering
    def _header_html(self, at: datetime | None = None) -> str:
        state = self.flow_state
        badge = _badge(state.name if state else "Starting", colour(state))
        run = f" <code>{html.escape(self.run_name)}</code>" if self.run_name else ""
        seconds = self.run_duration(at)
        took = ""
        if seconds is not None:
            label = "total" if self.finished else "running for"
            took = f' <span title="the run\'s duration">{label} {format_seconds(seconds)}</span>'
        return (
            f"<div><b>flow {html.escape(self.flow_name)}</b>{run} {badge}{took} "
            f'<span style="color:#6c757d">{self.flow_run_id}</span></div>'
        )

    def _table_html(self, rows: list[TaskRow], at: datetime | None = None) -> str:
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
        at = at or self._clock()
        for row in rows:
            if row.running:  # its duration counts up: never reuse its html
                lines.append(_row_html(row, at))
                continue
            cached = self._row_html.get(row.task_key)
            if cached is None or cached[0] is not row:
                cached = (row, _row_html(row, at))
                self._row_html[row.task_key] = cached
            lines.append(cached[1])
        lines.append("</table>")
        return "\n".join(lines)

    def to_html(self) -> str:
        """Return the static HTML summary (header, progress, task table)."""
        with self._lock:
            rows = list(self.rows.values())
            done = sum(1 for r in rows if r.state is not None and r.state.is_terminal)
            at = self._clock()
            return (
                f'<div class="nbflow-flow-run">{self._header_html(at)}'
                f"<div>{done} of {plural(len(rows), 'task')} finished</div>"
                f"{self._table_html(rows, at)}</div>"
            )

    def to_text(self) -> str:
        """Return a plain-text summary."""
        with self._lock:
            state = self.flow_state.name if self.flow_state else "Starting"
            seconds = self.run_duration()
            took = f" ({format_seconds(seconds)})" if seconds is not None else ""
            lines = [f"flow {self.flow_name} [{state}]{took} {self.flow_run_id}"]
            for row in self.rows.values():
                name = row.state.name if row.state else "Pending"
                extra = f" ({row.error})" if row.error else ""
                stale = " [stale: an input changed]" if row.stale else ""
                cached = " [cache hit]" if row.cached else ""
                retried = f" [{plural(row.retries, 'retry', 'retries')}]" if row.retries else ""
                lines.append(f"  {row.name}: {name}{extra}{cached}{retried}{stale}")
            return "\n".join(lines)

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        bundle: dict[str, Any] = {"text/plain": self.to_text(), "text/html": self.to_html()}
        # built by hand: ipywidgets' own bundle also renders a deep repr() of every trait
        bundle["application/vnd.jupyter.widget-view+json"] = {
            "version_major": 2,
            "version_minor": 0,
            "model_id": self.view.model_id,
        }
        # Marks the output as this run's summary, so the final state can be written into
        # it once the run ended (nbflow.notebook.summary; an output notebook's last word).
        metadata = {
            SUMMARY_KEY: {
                "flow_run_id": str(self.flow_run_id),
                "header_model_id": self.header.model_id,
                "table_model_id": self.table.model_id,
            }
        }
        return bundle, metadata

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


def _row_html(row: TaskRow, at: datetime) -> str:
    seconds = row.elapsed(at)
    duration = format_seconds(seconds) if seconds is not None else ""
    retries = plural(row.retries, "retry", "retries") if row.retries else ""
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
        f"{td} align=right>{duration}</td>{td} align=right>{retries}</td>"
        f"{td}>{'hit' if row.cached else ''}</td>"
        f"{td}><code>{html.escape(row.error)}</code></td></tr>"
    )


def _badge(text: str, background: str) -> str:
    return (
        f'<span style="background:{background};color:white;border-radius:3px;'
        f'padding:0 4px">{html.escape(text)}</span>'
    )
