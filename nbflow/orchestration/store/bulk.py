"""Fast batch INSERTs: thousands of task runs, states and logs per call.

``conn.execute(stmt, rows)`` spends most of its time in per-row parameter handling.
:func:`bulk_execute` compiles the statement once (cached: the engine's recorder sends
many small batches too), applies each column's bind processor (the public
``TypeEngine.bind_processor``) in a tight loop, and hands the driver either one
``executemany`` (SQLite: the C loop of ``sqlite3``) or, on PostgreSQL, ONE statement that
inserts from ``unnest`` of one binary array per column (one round trip, not one per row).
``ON CONFLICT`` clauses of the statement are kept.  :func:`bulk_execute_rows` takes rows
already in the driver's form (tuples, see ``batch.py``) and skips the per-value work.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = ["bulk_execute", "bulk_execute_rows"]


@dataclass(frozen=True)
class _Plan:
    sql: str
    keys: tuple[str, ...]
    #: Parameter names in the order the SQL wants them (positional drivers).
    names: tuple[str, ...]
    processors: Mapping[str, Callable[[Any], Any]]
    positional: bool
    columnar: bool


def bulk_execute(
    conn: sa.Connection,
    stmt: sa.Insert,
    table: sa.Table,
    data: list[dict[str, Any]],
    *,
    serialized: frozenset[str] = frozenset(),
) -> None:
    """Execute ``stmt`` for every row of ``data`` as one batch.

    All rows must have the keys of the first; values of the ``serialized`` keys are
    already in the driver's form and are passed through unprocessed; JSON columns must be
    among them (as JSON text).
    ``stmt`` should be a long-lived object: plans are cached by statement identity.
    """
    if not data:
        return
    plan = _plan(stmt, table, conn.dialect, tuple(data[0]), serialized)
    procs = plan.processors
    # Column by column: one comprehension per column beats a Python loop per row.
    columns: dict[str, list[Any]] = {}
    for key in plan.keys:
        values = [row[key] for row in data]
        proc = procs.get(key)
        if proc is not None:  # every processor maps None to NULL (JSON is pre-serialized)
            values = [None if v is None else proc(v) for v in values]
        columns[key] = values
    params: Any
    if plan.columnar:
        params = columns
    elif plan.positional:
        params = list(zip(*(columns[n] for n in plan.names), strict=True))
    else:
        rows = zip(*columns.values(), strict=True)
        params = [dict(zip(plan.keys, values, strict=True)) for values in rows]
    conn.exec_driver_sql(plan.sql, params)


def bulk_execute_rows(
    conn: sa.Connection,
    stmt: sa.Insert,
    table: sa.Table,
    keys: tuple[str, ...],
    rows: list[tuple[Any, ...]],
) -> None:
    """Execute ``stmt`` for every row of ``rows`` (tuples following ``keys``) as one batch.

    Values must already be in the driver's form: no bind processor is applied (JSON as
    text; on SQLite UUIDs as hex and datetimes as ``UTCDateTime`` text).
    """
    if not rows:
        return
    plan = _plan(stmt, table, conn.dialect, keys, frozenset(keys))
    params: Any
    if plan.columnar:
        params = dict(zip(keys, map(list, zip(*rows, strict=True)), strict=True))
    elif plan.positional:
        if plan.names == keys:
            params = rows
        else:
            at = [keys.index(name) for name in plan.names]
            params = [tuple(row[i] for i in at) for row in rows]
    else:
        params = [dict(zip(keys, row, strict=True)) for row in rows]
    conn.exec_driver_sql(plan.sql, params)


@lru_cache(maxsize=64)
def _plan(
    stmt: sa.Insert,
    table: sa.Table,
    dialect: Dialect,
    keys: tuple[str, ...],
    serialized: frozenset[str],
) -> _Plan:
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
    json_keys = {key for key in keys if isinstance(table.c[key].type, sa.JSON)}
    if json_keys - serialized:
        # JSON maps None to 'null', not NULL: no shortcut for None in the loops below.
        raise ValueError(f"bulk_execute: pass JSON columns serialized ({sorted(json_keys)})")
    processors = {
        key: proc
        for key in keys
        if key not in serialized and (proc := _bind_processor(table.c[key].type, dialect))
    }
    if dialect.name == "postgresql":
        sql = _unnest_sql(compiled.string, table, keys, dialect)
        return _Plan(sql, keys, keys, processors, False, True)
    names = tuple(compiled.positiontup or ()) if compiled.positional else keys
    return _Plan(compiled.string, keys, names, processors, compiled.positional, False)


def _bind_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    if dialect.name == "sqlite" and isinstance(type_, sa.Uuid):
        # The same value SQLAlchemy's processor computes (32 hex digits), one call less.
        return _UUID_HEX
    proc: Callable[[Any], Any] | None = type_.bind_processor(dialect)
    return proc


_UUID_HEX = operator.attrgetter("hex")


def _unnest_sql(compiled_sql: str, table: sa.Table, keys: tuple[str, ...], dialect: Dialect) -> str:
    """Return ``INSERT INTO t (cols) SELECT * FROM unnest(%(a)b::type[], ...) <ON CONFLICT>``."""
    preparer = dialect.identifier_preparer
    at = compiled_sql.find(" ON CONFLICT")
    conflict = compiled_sql[at:] if at >= 0 else ""
    if "%(" in conflict:  # pragma: no cover - our statements bind nothing there
        raise ValueError("bulk_execute: ON CONFLICT clauses with parameters are not supported")
    # %(key)b: binary parameters; text arrays would be escaped element by element in Python.
    arrays = ", ".join(f"%({key})b::{table.c[key].type.compile(dialect=dialect)}[]" for key in keys)
    columns = ", ".join(preparer.quote(k) for k in keys)
    return (
        f"INSERT INTO {preparer.format_table(table)} ({columns}) "
        f"SELECT * FROM unnest({arrays}){conflict}"
    )
