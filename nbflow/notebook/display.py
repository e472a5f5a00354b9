"""The live view of the kernel's interactive run: one widget, fed by engine events.

:class:`RunDisplay` owns the widget of the current run and its subscription to
:mod:`nbflow.engine.events`; the widget stays shown (and ``%nbflow status`` keeps reading
it) after its run finished, until the next run replaces it.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from nbflow.engine import events
from nbflow.notebook.widget import FlowRunWidget
from nbflow.states import State

__all__ = ["RunDisplay"]


class RunDisplay:
    """The widget of the current (or last) interactive run, listening while the run lasts."""

    def __init__(self) -> None:
        self.widget: FlowRunWidget | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def show(
        self,
        flow_run_id: UUID,
        flow_name: str,
        *,
        run_name: str,
        state: State,
        on_cancel: Callable[[], None],
    ) -> None:
        """Show a new widget for a run that just started, and feed it the run's events."""
        self._stop_listening()
        widget = FlowRunWidget(flow_run_id, flow_name, run_name=run_name, on_cancel=on_cancel)
        self.widget = widget
        widget.handle(events.FlowRunEvent(flow_run_id, state))
        self._unsubscribe = events.subscribe(widget.handle)
        widget.display()

    def refresh(self) -> None:
        """Rewrite the shown output from the latest state."""
        if self.widget is not None:
            self.widget.refresh_display()

    def mark_stale(self, task_keys: list[str]) -> None:
        """Flag tasks whose inputs changed since they ran."""
        if self.widget is not None and task_keys:
            self.widget.mark_stale(task_keys)

    def detach(self) -> None:
        """The run finished: show its final state and stop listening to events."""
        self.refresh()
        self._stop_listening()

    def status(self) -> str | None:
        """Return the run's state and tasks as text (``%nbflow status``), or None before any run."""
        if self.widget is None:
            return None
        self.widget.flush()
        return self.widget.to_text()

    def _stop_listening(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
