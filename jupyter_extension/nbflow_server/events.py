"""In-process publish/subscribe of state changes for the event-stream websocket.

Handlers publish after a change is stored; subscribers (one per websocket) must be quick
and thread-safe, because the service loops may publish from other threads.
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

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add ``subscriber``; return the function that removes it."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: dict[str, Any]) -> None:
        """Give ``event`` to every subscriber; one failing subscriber does not stop the rest."""
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:
                logger.exception("event subscriber %r failed", subscriber)

    @property
    def subscriber_count(self) -> int:
        """How many subscribers are listening."""
        with self._lock:
            return len(self._subscribers)
