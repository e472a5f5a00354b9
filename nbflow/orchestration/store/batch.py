"""Driver-ready parameter rows for the batch writes: task runs, their states, logs.

The engine's recorder ships task runs by the ten thousand, so these rows are built by
hand, straight from the models' ``__dict__``, as tuples whose values already have the
driver's form (on SQLite: UUIDs as 32 hex digits and datetimes as the text
:class:`~nbflow.orchestration.store.tables.UTCDateTime` stores; on PostgreSQL: the Python
objects, which psycopg adapts).  :func:`~nbflow.orchestration.store.bulk.bulk_execute_rows`
hands them to the driver without per-value processing.

States are serialized by :func:`state_json`, a hand-written encoder of the common case
(plain JSON ``data``) that falls back to pydantic for anything else; the text it produces
reads back with ``State.model_validate_json`` exactly like pydantic's own.

PostgreSQL text cannot hold NUL: in the plain-text columns (names, keys, log lines) a NUL
becomes U+FFFD, on both databases alike, so one odd line never fails a whole batch.  JSON
text needs nothing: its encoder writes NUL as the escape ``\\u0000``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from nbflow.orchestration.store.tables import _to_utc
from nbflow.schemas import Log, TaskRun
from nbflow.states import State

__all__ = [
    "LOG_KEYS",
    "STATE_KEYS",
    "TASK_RUN_KEYS",
    "log_params",
    "state_json",
    "task_run_params",
]

#: Columns of the ``task_runs`` tuples, in order.
TASK_RUN_KEYS = (
    "id",
    "flow_run_id",
    "name",
    "task_key",
    "dynamic_key",
    "state_type",
    "state_name",
    "state_json",
    "run_count",
    "start_time",
    "end_time",
    "total_run_time",
    "cache_key",
    "cache_expiration",
    "upstream",
    "inputs",
    "outputs",
    "tags",
    "created",
    "updated",
)
#: Columns of the ``task_run_states`` tuples, in order.
STATE_KEYS = ("state_id", "task_run_id", "type", "name", "timestamp", "state_json")
#: Columns of the ``logs`` tuples, in order.
LOG_KEYS = ("flow_run_id", "task_run_id", "level", "logger", "message", "timestamp")

#: The fields :func:`state_json` writes by hand; another set (a newer State) means pydantic.
_STATE_FIELDS = ("id", "type", "name", "timestamp", "message", "scheduled_time", "data")
_FAST_STATES = tuple(State.model_fields) == _STATE_FIELDS
_encode = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode


def state_json(state: State, timestamp: str | None = None) -> str:
    """Return ``state`` as JSON text (what ``state.model_dump_json()`` would, read back).

    ``timestamp``: the state's timestamp as ISO text, when the caller has it already.
    """
    if _FAST_STATES:
        d = state.__dict__
        try:
            message, scheduled, data = d["message"], d["scheduled_time"], d["data"]
            # pydantic writes UTC as "Z"; "+00:00" reads back to the same instant.
            return (
                f'{{"id":"{d["id"]}","type":"{d["type"]._value_}","name":{_encode(d["name"])},'
                f'"timestamp":"{timestamp or d["timestamp"].isoformat()}",'
                f'"message":{"null" if message is None else _encode(message)},'
                f'"scheduled_time":{"null" if scheduled is None else _quoted_iso(scheduled)},'
                f'"data":{_encode(data) if data else "{}"}}}'
            )
        except (TypeError, ValueError, AttributeError):
            pass  # data that JSON cannot hold as is (datetimes, NaN, ...): pydantic's way
    return state.model_dump_json()


def _quoted_iso(value: datetime) -> str:
    return f'"{value.isoformat()}"'


def _state_row(task_run_id: UUID, s: State, sqlite: bool) -> tuple[tuple[Any, ...], str]:
    """Return the ``task_run_states`` row of ``s`` and its JSON text."""
    d = s.__dict__
    stamp: datetime = d["timestamp"]
    if sqlite and stamp.tzinfo is UTC:
        # One isoformat for both: the column's text and the JSON's (with a "T").
        full = stamp.isoformat(" ", "microseconds")
        text = state_json(s, f"{full[:10]}T{full[11:]}")
        return (
            d["id"].hex,
            task_run_id.hex,
            d["type"]._value_,
            _text(d["name"]),
            full[:26],
            text,
        ), text
    text = state_json(s)
    if sqlite:
        return (
            d["id"].hex,
            task_run_id.hex,
            d["type"]._value_,
            _text(d["name"]),
            _sqlite_time(stamp),
            text,
        ), text
    return (d["id"], task_run_id, d["type"]._value_, _text(d["name"]), _to_utc(stamp), text), text


def _sqlite_time(value: datetime | None) -> str | None:
    """The text :class:`UTCDateTime` stores on SQLite (naive UTC, microseconds)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = _to_utc(value)
    return value.isoformat(" ", "microseconds")[:26]


def _pg_time(value: datetime | None) -> datetime | None:
    return None if value is None else _to_utc(value)


def _text(value: str | None) -> str | None:
    """Return ``value`` with NUL (which PostgreSQL text cannot hold) replaced by U+FFFD."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def _hex(value: UUID | None) -> str | None:
    return None if value is None else value.hex


def _same(value: Any) -> Any:
    return value


def _converters(sqlite: bool) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """Return (uuid, datetime) converters to the driver's form."""
    return (_hex, _sqlite_time) if sqlite else (_same, _pg_time)


def _json_list(items: list[Any]) -> str:
    return _encode(items) if items else "[]"


def _uuid_list(items: list[UUID]) -> str:
    if not items:
        return "[]"
    return "[" + ",".join(f'"{u}"' for u in items) + "]"


def task_run_params(
    task_runs: Sequence[TaskRun], states: Sequence[tuple[UUID, State]], *, sqlite: bool
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Return the ``task_runs`` rows (the last snapshot of a run wins) and the state rows.

    Tuples follow :data:`TASK_RUN_KEYS` and :data:`STATE_KEYS`.  Each state is serialized
    once, also when it is a task run's current state.
    """
    uid, ts = _converters(sqlite)
    texts: dict[int, str] = {}  # by id() of the state object: the run's state is one of them
    state_rows = []
    for task_run_id, s in states:
        row, texts[id(s)] = _state_row(task_run_id, s, sqlite)
        state_rows.append(row)
    latest = {t.id: t for t in task_runs}
    run_rows = []
    for t in latest.values():
        r = t.__dict__
        state = r["state"]
        if state is None:
            state_type = state_name = text = None
        else:
            text = texts.get(id(state)) or state_json(state)
            state_type, state_name = state.type._value_, _text(state.name)
        created = ts(r["created"])
        run_rows.append(
            (
                uid(r["id"]),
                uid(r["flow_run_id"]),
                _text(r["name"]),
                _text(r["task_key"]),
                r["dynamic_key"],
                state_type,
                state_name,
                text,
                r["run_count"],
                ts(r["start_time"]),
                ts(r["end_time"]),
                r["total_run_time"],
                _text(r["cache_key"]),
                ts(r["cache_expiration"]),
                _uuid_list(r["upstream"]),
                _json_list(r["inputs"]),
                _json_list(r["outputs"]),
                _json_list(r["tags"]),
                created,
                created if r["updated"] is r["created"] else ts(r["updated"]),
            )
        )
    return run_rows, state_rows


def log_params(logs: Sequence[Log], *, sqlite: bool) -> list[tuple[Any, ...]]:
    """Return the ``logs`` rows, following :data:`LOG_KEYS`."""
    uid, ts = _converters(sqlite)
    rows = []
    for entry in logs:
        d = entry.__dict__
        rows.append(
            (
                uid(d["flow_run_id"]),
                uid(d["task_run_id"]),
                d["level"],
                _text(d["logger"]),
                _text(d["message"]),
                ts(d["timestamp"]),
            )
        )
    return rows
