"""PostgreSQL ``LISTEN``: wake this server when another server (or process) writes.

Servers sharing one PostgreSQL database learn of each other's writes through
``NOTIFY``: the store notifies ``nbflow_due:<schema>`` in the transaction that makes a
batch run due (:mod:`nbflow.orchestration.store.due`), and PostgreSQL delivers it at
commit to every connection that listens on the channel.  :class:`PgListener` is that
connection: one dedicated psycopg 3 connection per server, in autocommit, read by a
daemon thread that hands each payload to the callback of its channel.

A dropped connection (database restart, failover, a terminated backend, a dead network
noticed by the keepalive query) is reopened with backoff (1 s doubling to 30 s); after
every (re)connect ``on_connect`` runs, because notifications sent while nobody listened
are lost — the server's dispatcher passes once then.  Polling stays the fallback: a
lost notification delays a run by at most ``dispatch_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import make_url

from nbflow.orchestration.store.database import normalize_url
from nbflow_server.services.base import Service

__all__ = ["PgListener", "libpq_url"]

logger = logging.getLogger("nbflow.server.listen")

#: Receives the payload of one notification (in the listener's thread: be quick).
Handler = Callable[[str], None]


def libpq_url(db_url: str) -> str:
    """Return the store's SQLAlchemy URL as a libpq URL (no ``+psycopg``; query kept)."""
    url = normalize_url(make_url(db_url)).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class PgListener(Service):
    """A thread holding one ``LISTEN`` connection, reconnecting when it drops."""

    name = "pg-listener"

    def __init__(
        self,
        db_url: str,
        handlers: Mapping[str, Handler],
        *,
        on_connect: Callable[[], None] | None = None,
        poll: float = 0.5,
        keepalive: float = 30.0,
        max_backoff: float = 30.0,
    ) -> None:
        """Listen on ``<prefix>:<schema>`` for each prefix in ``handlers``."""
        self.conninfo = libpq_url(db_url)
        self.handlers = dict(handlers)
        self.on_connect = on_connect
        self.poll = poll
        self.keepalive = keepalive
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        #: Set while a connection listens (tests wait on it; it is cleared on a drop).
        self.listening = threading.Event()
        #: How many times a connection was established (1 + reconnects).
        self.connections = 0
        #: The PostgreSQL process id of the current connection (None before the first).
        self.backend_pid: int | None = None

    async def start(self) -> None:
        """Start the listening thread (it connects in the background)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="nbflow-pg-listen", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        """Stop the thread (within ``poll`` seconds) and close the connection."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 10)

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 1.0
            except Exception as exc:
                if self._stop.is_set():
                    break
                logger.warning(
                    "nbflow: the PostgreSQL LISTEN connection failed (%s); reconnecting in %g s "
                    "(until then the dispatcher polls)",
                    exc,
                    backoff,
                )
                self._stop.wait(backoff)
                backoff = min(self.max_backoff, backoff * 2)
            finally:
                self.listening.clear()
                self._close()

    def _listen(self) -> None:
        import psycopg
        from psycopg import sql

        self._conn = conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
        row = conn.execute("SELECT current_schema()").fetchone()
        schema = row[0] if row else "public"
        channels = {f"{prefix}:{schema}": handler for prefix, handler in self.handlers.items()}
        for channel in channels:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        self.backend_pid = conn.info.backend_pid
        self.connections += 1
        self.listening.set()
        logger.info("nbflow: listening for notifications on %s", ", ".join(channels))
        self._connected()
        idle = 0.0
        while not self._stop.is_set():
            got = False
            for note in conn.notifies(timeout=self.poll):
                got = True
                handler = channels.get(note.channel)
                if handler is not None:
                    try:
                        handler(note.payload)
                    except Exception:
                        logger.exception(
                            "nbflow: handling a notification on %s failed", note.channel
                        )
            idle = 0.0 if got else idle + self.poll
            if idle >= self.keepalive:
                # A dead peer is only noticed when something is sent.
                conn.execute("SELECT 1")
                idle = 0.0

    def _connected(self) -> None:
        if self.on_connect is not None:
            try:
                self.on_connect()
            except Exception:
                logger.exception("nbflow: the LISTEN on_connect callback failed")

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
