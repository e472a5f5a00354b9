"""Events across servers: a websocket of any server shows every server's runs.

Servers sharing one PostgreSQL database relay their event streams through it:

- **out**: every event published on this server's bus (:attr:`EventBus.relay`) becomes a
  small ``NOTIFY`` on ``nbflow_events:<schema>``, ids only:
  ``{"o": <this server's origin id>, "t": <event type>, "id": <run/task run/deployment id>}``.
  They are queued (publishing never blocks the event loop) and a sender thread sends them
  in batches on a connection of its own (one statement per batch); while the database is
  unreachable they are dropped, counted and logged;
- **in**: the server's ``LISTEN`` connection (:mod:`~nbflow_server.services.pg_listener`)
  hands each notification to :meth:`EventRelay.receive`: an event of another origin is
  turned back into a full event by reading the row (so payloads stay small and the event
  carries the committed state) and published with :meth:`EventBus.publish_remote`, to the
  websockets only.  Reads happen on one thread, in arrival order; a notification about
  an object whose read is still queued is folded into it (the read sees the latest
  row), and none is read while no websocket is open on this server.

What is not relayed: extras an event carried only in memory (a kernel service's
``kernel`` facts) — the receiving server reads the stored row.  A websocket that
reconnects asks for a replay with ``?since=`` (:mod:`nbflow_server.handlers.events`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from nbflow.exceptions import NotFound
from nbflow.orchestration.store import Store, rows
from nbflow.orchestration.store.tables import task_runs
from nbflow_server.events import EventBus
from nbflow_server.handlers.base import flow_run_event
from nbflow_server.services.base import Service
from nbflow_server.services.pg_listener import libpq_url

__all__ = ["EVENTS_CHANNEL_PREFIX", "EventRelay"]

logger = logging.getLogger("nbflow.server.events")

#: Prefix of the PostgreSQL channel of relayed events; the schema name follows a colon.
EVENTS_CHANNEL_PREFIX = "nbflow_events"
#: Most notifications sent in one statement.
_BATCH = 200
#: Most events waiting to be sent; beyond, the oldest are dropped (and counted).
_QUEUE = 10_000
_SEND = "SELECT pg_notify(%s || ':' || current_schema(), p) FROM unnest(%s::text[]) AS p"


def _event_key(event: dict[str, Any]) -> tuple[str, str] | None:
    """Return (type, id) naming what ``event`` is about (None: not relayed)."""
    kind = event.get("type")
    if kind == "flow_run_state":
        ref = event.get("flow_run_id")
    elif kind == "task_run_state":
        ref = (event.get("task_run") or {}).get("id")
    elif kind == "deployment":
        ref = (event.get("deployment") or {}).get("id")
    else:
        return None
    return (str(kind), str(ref)) if ref else None


class EventRelay(Service):
    """NOTIFY this server's events; publish other servers' events read back from the store."""

    name = "event-relay"

    def __init__(self, db_url: str, store: Store, bus: EventBus) -> None:
        self.conninfo = libpq_url(db_url)
        self.store = store
        self.bus = bus
        #: This server's id in the payloads (its own notifications are ignored).
        self.origin = uuid.uuid4().hex[:12]
        self._queue: queue.Queue[str] = queue.Queue(_QUEUE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="nbflow-event-relay")
        #: Events not sent (queue full or database unreachable).
        self.dropped = 0
        # Reads queued and not started: a burst about one object is read once.
        self._pending: set[tuple[str, UUID]] = set()
        self._pending_lock = threading.Lock()

    async def start(self) -> None:
        """Relay this server's events from now on."""
        self._stop.clear()
        self.bus.relay = self.send
        self._thread = threading.Thread(target=self._run, name="nbflow-event-notify", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop relaying; events still queued are dropped."""
        self.bus.relay = None
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 10)
        self._reader.shutdown(wait=False, cancel_futures=True)

    # -- out -----------------------------------------------------------------------------
    def send(self, event: dict[str, Any]) -> None:
        """Queue the notification of a local event (any thread; never blocks)."""
        key = _event_key(event)
        if key is None:
            return
        payload = json.dumps({"o": self.origin, "t": key[0], "id": key[1]})
        while True:
            try:
                self._queue.put_nowait(payload)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _run(self) -> None:
        import psycopg

        conn: Any = None
        backoff = 1.0
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
                conn.execute(_SEND, (EVENTS_CHANNEL_PREFIX, batch))
                backoff = 1.0
            except Exception as exc:
                self.dropped += len(batch)
                logger.warning(
                    "nbflow: could not relay %d events to other servers (%s); %d dropped so "
                    "far, retrying in %g s",
                    len(batch),
                    exc,
                    self.dropped,
                    backoff,
                )
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                    conn = None
                self._stop.wait(backoff)
                backoff = min(30.0, backoff * 2)
        if conn is not None:
            conn.close()

    # -- in ------------------------------------------------------------------------------
    def receive(self, payload: str) -> None:
        """Handle a notification (the listener's thread): read and publish another
        server's event on the reader thread."""
        try:
            note = json.loads(payload)
            origin, kind, ref = note["o"], note["t"], UUID(note["id"])
        except (ValueError, KeyError, TypeError):
            logger.warning("nbflow: ignoring an unreadable event notification %r", payload)
            return
        if origin == self.origin or not self.bus.remote_subscriber_count:
            return  # nobody here would see it: no read
        key = (kind, ref)
        with self._pending_lock:
            if key in self._pending:
                return  # a read of it is queued already and will see this change too
            self._pending.add(key)
        try:
            self._reader.submit(self._publish, kind, ref)
        except RuntimeError:
            pass  # stopping

    def _publish(self, kind: str, ref: UUID) -> None:
        with self._pending_lock:
            self._pending.discard((kind, ref))
        try:
            event = self.read_event(kind, ref)
        except NotFound:
            return  # deleted since
        except Exception:
            logger.exception("nbflow: reading another server's %s %s failed", kind, ref)
            return
        if event is not None:
            self.bus.publish_remote(event)

    def read_event(self, kind: str, ref: UUID) -> dict[str, Any] | None:
        """Build the event of type ``kind`` about ``ref`` from the stored row."""
        if kind == "flow_run_state":
            return flow_run_event(self.store.read_flow_run(ref))
        if kind == "deployment":
            return {
                "type": "deployment",
                "deployment": self.store.read_deployment(ref).model_dump(mode="json"),
            }
        if kind == "task_run_state":
            row = self.store.read_transaction(
                lambda c: c.execute(sa.select(task_runs).where(task_runs.c.id == ref)).first()
            )
            if row is None:
                return None
            task_run = rows.read_task_run(row)
            return {
                "type": "task_run_state",
                "flow_run_id": str(task_run.flow_run_id) if task_run.flow_run_id else None,
                "task_run": task_run.model_dump(mode="json"),
                "state": task_run.state.model_dump(mode="json") if task_run.state else None,
            }
        return None
