"""The server's dispatcher service: the one :class:`~nbflow.dispatch.Dispatcher` on a loop.

The server dispatches the runs of the runners in ``NbflowApp.dispatch_runners`` (other
runners' runs are left to ``nbflow worker`` processes, which run the same class over the
HTTP API).  Each pass runs :meth:`Dispatcher.pass_once` in a thread (stop Cancelling
runs, claim what is due within every concurrency limit in one store transaction, submit
from the dispatcher's thread pool); the event loop never blocks.

A pass runs (docs/server.md, "How dispatch wakes up"):

- at once when a run becomes due: :meth:`DispatcherService.due` is called after the
  commit by the store of this server (run now, retry, the scheduler's runs, a
  rescheduled run) and, on PostgreSQL, by the ``LISTEN`` connection for other servers'
  writes (:mod:`nbflow_server.services.pg_listener`);
- at the expected start of the soonest Scheduled run (a timer, re-armed after each pass
  from the store and on every notification of a future run);
- at once when a run it submitted exits or a pass was full;
- every ``dispatch_interval`` seconds regardless: the fallback for anything missed.

With ``event_driven=False`` only the last two remain (polling, for comparison).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime

from nbflow.client.base import Client
from nbflow.dispatch import Dispatcher, RunnerPool
from nbflow.dispatch.dispatcher import DUE_SLACK
from nbflow.schemas import FlowRun, FlowRunFilter
from nbflow.states import now
from nbflow_server.services.base import PeriodicService

__all__ = ["Dispatcher", "DispatcherService", "RunnerPool", "iter_runs"]

_PAGE = 500


def iter_runs(client: Client, flt: FlowRunFilter, *, most: int = 100_000) -> Iterator[FlowRun]:
    """Yield every run matching ``flt`` page by page (at most ``most``)."""
    offset, seen = 0, 0
    while seen < most:
        page = client.read_flow_runs(flt.model_copy(update={"limit": _PAGE, "offset": offset}))
        yield from page
        seen += len(page)
        if len(page) < _PAGE:
            return
        offset += _PAGE


class DispatcherService(PeriodicService):
    """Run :meth:`Dispatcher.pass_once` when runs become due, and every ``interval`` seconds."""

    name = "dispatcher"

    def __init__(
        self, dispatcher: Dispatcher, *, interval: float, event_driven: bool = True
    ) -> None:
        super().__init__(interval)
        self.dispatcher = dispatcher
        self.event_driven = event_driven
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: datetime | None = None
        #: Called on the event loop when a run is due now (the workers' held claims).
        self.on_due_now: Callable[[], None] | None = None

    async def start(self) -> None:
        """Start the loop; the dispatcher wakes it when a slot frees up."""
        self._event_loop = asyncio.get_running_loop()
        self.dispatcher.on_wake = self.wake_soon
        await super().start()

    async def tick(self) -> None:
        """One pass in a thread; pass again at once when the claim was full, else arm the
        timer for the soonest Scheduled run."""
        d = self.dispatcher

        def work() -> datetime | None:
            d.pass_once()
            return d.next_due() if self.event_driven and not d.more else None

        upcoming = await asyncio.get_running_loop().run_in_executor(None, work)
        if d.more:
            self.wake()
        elif upcoming is not None:
            self._arm(upcoming)

    def due(self, at: datetime) -> None:
        """A run is due at ``at`` (called from any thread): pass now, or at ``at``."""
        loop = self._event_loop
        if not self.event_driven or loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._arm, at)
        except RuntimeError:
            pass

    def _arm(self, at: datetime) -> None:
        """On the event loop: wake now if ``at`` has come, else keep the soonest timer."""
        delay = (at - now()).total_seconds()
        if delay <= 0:
            self.wake()
            self._due_now()
            return
        if self._timer is not None and self._timer_at is not None and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        assert self._event_loop is not None
        self._timer_at = at
        self._timer = self._event_loop.call_later(delay + DUE_SLACK, self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        self.wake()
        self._due_now()

    def _due_now(self) -> None:
        if self.on_due_now is not None:
            self.on_due_now()

    def wake_soon(self) -> None:
        """Called from the dispatcher's threads: pass again on the event loop."""
        loop = self._event_loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.wake)
            except RuntimeError:
                pass

    async def stop(self) -> None:
        """Stop the loop and wait for submissions and kills in progress (not for the runs)."""
        await super().stop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        self.dispatcher.on_wake = None
        await asyncio.get_running_loop().run_in_executor(None, self.dispatcher.close)
        self._event_loop = None
