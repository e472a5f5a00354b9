"""The server's dispatcher service: the one :class:`~nbflow.dispatch.Dispatcher` on a loop.

The server dispatches the runs of the runners in ``NbflowApp.dispatch_runners`` (other
runners' runs are left to ``nbflow worker`` processes, which run the same class over the
HTTP API).  Every ``dispatch_interval`` seconds, and at once when a run it submitted
exits or a pass was full, the service runs one :meth:`Dispatcher.pass_once` in a thread:
stop Cancelling runs, claim what is due within every concurrency limit (one store
transaction), submit from the dispatcher's thread pool.  The event loop never blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from nbflow.client.base import Client
from nbflow.dispatch import Dispatcher, RunnerPool
from nbflow.schemas import FlowRun, FlowRunFilter
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
    """Run :meth:`Dispatcher.pass_once` every ``interval`` seconds, off the event loop."""

    name = "dispatcher"

    def __init__(self, dispatcher: Dispatcher, *, interval: float) -> None:
        super().__init__(interval)
        self.dispatcher = dispatcher
        self._event_loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Start the loop; the dispatcher wakes it when a slot frees up."""
        self._event_loop = asyncio.get_running_loop()
        self.dispatcher.on_wake = self._wake_soon
        await super().start()

    async def tick(self) -> None:
        """One pass in a thread; pass again at once when the claim was full."""
        await asyncio.get_running_loop().run_in_executor(None, self.dispatcher.pass_once)
        if self.dispatcher.more:
            self.wake()

    def _wake_soon(self) -> None:
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
        self.dispatcher.on_wake = None
        await asyncio.get_running_loop().run_in_executor(None, self.dispatcher.close)
        self._event_loop = None
