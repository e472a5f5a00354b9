"""In-process publish/subscribe of state changes for the event-stream websocket.

Handlers publish after a change is stored; subscribers (one per websocket) must be quick
and thread-safe, because the service loops may publish from other threads.

Across servers (PostgreSQL): :attr:`EventBus.relay` receives every local event (the
server's :class:`~nbflow_server.services.event_relay.EventRelay` NOTIFYs its ids), and
events of other servers come back through :meth:`EventBus.publish_remote`, only to the
subscribers that asked for them (``remote=True``: the websockets).  The server's own
services (notifications, kernels) see this server's events only, so another server's
run is never notified twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["EventBus", "Subscriber"]

logger = logging.getLogger("nbflow.server.events")

#: A subscriber receives one JSON-ready event dict.
Subscriber = Callable[[dict[str, Any]], None]


class EventBus:
    """Fan events out to the subscribers of this server process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self._remote: list[Subscriber] = []
        #: Receives every event published here (the cross-server relay; None: no relay).
        self.relay: Subscriber | None = None

    def subscribe(self, subscriber: Subscriber, *, remote: bool = False) -> Callable[[], None]:
        """Add ``subscriber`` (``remote``: also other servers' events); return the function
        that removes it."""
        with self._lock:
            self._subscribers.append(subscriber)
            if remote:
                self._remote.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)
                if subscriber in self._remote:
                    self._remote.remove(subscriber)

        return unsubscribe

    def publish(self, event: dict[str, Any]) -> None:
        """Give ``event`` to every subscriber; one failing subscriber does not stop the rest."""
        with self._lock:
            subscribers = list(self._subscribers)
        self._deliver(subscribers, event)
        relay = self.relay
        if relay is not None:
            try:
                relay(event)
            except Exception:
                logger.exception("relaying an event to the other servers failed")

    def publish_remote(self, event: dict[str, Any]) -> None:
        """Give another server's ``event`` to the subscribers that asked for remote events."""
        with self._lock:
            subscribers = list(self._remote)
        self._deliver(subscribers, event)

    @staticmethod
    def _deliver(subscribers: list[Subscriber], event: dict[str, Any]) -> None:
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:
                logger.exception("event subscriber %r failed", subscriber)

    @property
    def remote_subscriber_count(self) -> int:
        """How many subscribers take other servers' events (open websockets)."""
        with self._lock:
            return len(self._remote)

    @property
    def subscriber_count(self) -> int:
        """How many subscribers are listening."""
        with self._lock:
            return len(self._subscribers)
