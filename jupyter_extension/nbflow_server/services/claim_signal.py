"""Long-polling claims: ``POST /flow_runs/claim`` with ``wait_seconds`` waits for a due run.

A worker (``nbflow worker``) that finds nothing to claim sends its next claim with a wait;
the handler holds it on :class:`ClaimSignal` and claims again as soon as the server's
dispatcher service learns that a run is due now — a run created or rescheduled here, a
scheduled time reached, another server's run through PostgreSQL ``NOTIFY`` (the same
wake-ups the server's own dispatcher gets, :mod:`nbflow_server.services.dispatcher`).  So
a worker's runs start within milliseconds of becoming due instead of at its next poll.
Without those wake-ups (services off) the handler looks again every
:data:`RECHECK_SECONDS`, so a long poll is never slower than the old polling.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["RECHECK_SECONDS", "ClaimSignal"]

#: Seconds between two claims of a held request that heard nothing.
RECHECK_SECONDS = 1.0


class ClaimSignal:
    """Wake every held claim at once (used on the server's event loop only)."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Event] = set()

    def notify(self) -> None:
        """A run is due now: every held claim tries again."""
        for event in list(self._waiters):
            event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait until :meth:`notify` or ``timeout`` seconds; True when notified."""
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
            return event.is_set()
        finally:
            self._waiters.discard(event)

    @property
    def held(self) -> int:
        """How many claims are waiting (for tests and the log)."""
        return len(self._waiters)
