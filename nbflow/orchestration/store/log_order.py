"""One run's log records become visible in id order, so a log cursor never skips any.

Readers page a run's logs by id (``id > cursor``).  On PostgreSQL ids come from a sequence
at insert time, not at commit: a batch that got lower ids but commits after a later one
would fall behind a reader's cursor and never be read.  Every transaction that inserts
logs of a run therefore first takes that run's transaction-scoped advisory lock
(:func:`lock_log_streams`): writers of one run's logs take their ids and commit one after
the other.  Different runs do not wait for each other (unless their lock keys collide,
which only serializes them).  SQLite needs nothing: ``BEGIN IMMEDIATE`` already
serializes every writer.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

import sqlalchemy as sa

__all__ = ["LOG_LOCK_CLASS", "lock_log_streams"]

#: First key of the two-key advisory locks of log streams ("nblg").
LOG_LOCK_CLASS = 0x6E626C67


def lock_log_streams(conn: sa.Connection, flow_run_ids: Iterable[UUID | None]) -> None:
    """Take the log-stream lock of each run (in key order: writers cannot deadlock)."""
    if conn.dialect.name != "postgresql":
        return
    keys = sorted({(run_id.int & 0x7FFFFFFF) for run_id in flow_run_ids if run_id is not None})
    for key in keys:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(LOG_LOCK_CLASS, key)))
