"""Telling dispatchers that a batch run became due, at the commit that made it so.

A run becomes due (or will at a known time) when it is created Scheduled — run now, a
retry, the scheduler's next run — or is rescheduled (AwaitingRetry, a new scheduled
time).  :func:`note_due` is called in that transaction, in one place for every writer
(:mod:`~nbflow.orchestration.store.flow_runs`: ``create`` and ``propose``):

- on PostgreSQL it issues ``pg_notify(<channel>, <payload>)``; PostgreSQL delivers it to
  every ``LISTEN``-ing connection when, and only if, the transaction commits, so a
  dispatcher in another server never wakes for a run it cannot see yet;
- in every process it records the run on the connection, and the store hands the records
  to its in-process listeners (:meth:`Store.add_due_listener`) after the commit, so the
  dispatcher of the same server wakes on SQLite too.

The channel is per schema (``nbflow_due:<schema>``): stores in different schemas of one
database (the test suite does this) do not wake each other.  The payload is small JSON:
``{"id": "<run id>", "at": "<expected start, ISO 8601>"}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from nbflow.schemas import FlowRun
from nbflow.states import StateType

__all__ = [
    "DUE_CHANNEL_PREFIX",
    "DueListener",
    "channel_expression",
    "note_due",
    "parse_payload",
    "take_noted",
]

#: Prefix of the PostgreSQL notification channel; the schema name follows a colon.
DUE_CHANNEL_PREFIX = "nbflow_due"
#: Key in ``Connection.info`` under which the transaction's due times are collected.
_INFO_KEY = "nbflow_due_runs"
#: Receives the expected start time of a run that became due or will (any thread).
DueListener = Callable[[datetime], None]


def channel_expression(prefix: str = DUE_CHANNEL_PREFIX) -> sa.ColumnElement[Any]:
    """The channel name as SQL: ``<prefix>:`` and the connection's current schema."""
    return sa.literal(prefix + ":") + sa.func.current_schema()


def note_due(conn: sa.Connection, run: FlowRun) -> None:
    """Announce ``run`` (as just written) if it is a batch run waiting to be claimed."""
    state = run.state
    at = run.expected_start_time
    if run.mode != "batch" or state is None or state.type is not StateType.SCHEDULED or at is None:
        return
    conn.info.setdefault(_INFO_KEY, []).append(at)
    if conn.dialect.name == "postgresql":
        payload = json.dumps({"id": str(run.id), "at": at.isoformat()})
        conn.execute(sa.select(sa.func.pg_notify(channel_expression(), payload)))


def take_noted(conn: sa.Connection) -> list[datetime]:
    """Return and forget the due times :func:`note_due` recorded on ``conn``."""
    noted: list[datetime] = conn.info.pop(_INFO_KEY, None) or []
    return noted


def parse_payload(payload: str) -> datetime | None:
    """Return the expected start time in a notification's payload (None: unreadable)."""
    try:
        return datetime.fromisoformat(json.loads(payload)["at"])
    except (ValueError, KeyError, TypeError):
        return None
