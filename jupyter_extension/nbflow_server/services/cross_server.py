"""Wiring the dispatcher's wake-ups and the cross-server event relay (docs/server.md).

- this server's store tells the dispatcher, after each commit, about runs it made due
  (SQLite and PostgreSQL);
- on PostgreSQL one ``LISTEN`` connection (:class:`PgListener`) carries other servers'
  due runs (``nbflow_due:<schema>``) to the dispatcher and their events
  (``nbflow_events:<schema>``) to the :class:`EventRelay`, which also NOTIFYs this
  server's events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nbflow.orchestration.store import Store
from nbflow.orchestration.store.due import DUE_CHANNEL_PREFIX, parse_payload
from nbflow_server.events import EventBus
from nbflow_server.services.base import Service
from nbflow_server.services.dispatcher import DispatcherService
from nbflow_server.services.event_relay import EVENTS_CHANNEL_PREFIX, EventRelay
from nbflow_server.services.pg_listener import PgListener

__all__ = ["CrossServer", "cross_server"]


@dataclass
class CrossServer:
    """The services to start (after the dispatcher) and the parts a server keeps."""

    services: list[Service] = field(default_factory=list)
    listener: PgListener | None = None
    relay: EventRelay | None = None


def cross_server(
    dispatcher: DispatcherService,
    store: Store,
    bus: EventBus,
    *,
    db_url: str,
    listen_db_url: str = "",
    event_driven: bool = True,
    relay_events: bool = True,
) -> CrossServer:
    """Connect the wake-ups of ``dispatcher`` and, on PostgreSQL, the LISTEN connection."""
    dispatcher.event_driven = event_driven
    if event_driven:
        store.add_due_listener(dispatcher.due)
    wiring = CrossServer()
    if store.dialect != "postgresql":
        return wiring
    handlers: dict[str, Callable[[str], None]] = {}
    if event_driven:
        handlers[DUE_CHANNEL_PREFIX] = lambda payload: _due_from(payload, dispatcher)
    if relay_events:
        wiring.relay = EventRelay(db_url, store, bus)
        handlers[EVENTS_CHANNEL_PREFIX] = wiring.relay.receive
        wiring.services.append(wiring.relay)
    if handlers:
        wiring.listener = PgListener(
            listen_db_url or db_url,
            handlers,
            # Notifications sent while the connection was down are lost: pass once.
            on_connect=dispatcher.wake_soon,
        )
        wiring.services.insert(0, wiring.listener)
    return wiring


def _due_from(payload: str, dispatcher: DispatcherService) -> None:
    """Hand a due-run notification to the dispatcher (an unreadable one: pass now)."""
    at = parse_payload(payload)
    if at is None:
        dispatcher.wake_soon()
    else:
        dispatcher.due(at)
