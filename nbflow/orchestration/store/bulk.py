"""Fast batch INSERTs: thousands of task runs, states and logs per call.

``conn.execute(stmt, rows)`` spends most of its time in per-row parameter handling.
:func:`bulk_execute` compiles the statement once, applies each column's bind processor
(the public ``TypeEngine.bind_processor``) in a tight loop, and hands the driver either
one ``executemany`` (SQLite: the C loop of ``sqlite3``) or, on PostgreSQL, ONE statement
that inserts from ``unnest`` of one array per column (a single round trip instead of one
per row).  ``ON CONFLICT`` clauses of the statement are kept.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

__all__ = ["bulk_execute"]


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
    already in the driver's form (JSON text) and are passed through unprocessed.
    """
    if not data:
        return
    dialect = conn.dialect
    keys = list(data[0])
    compiled = stmt.compile(dialect=dialect, column_keys=keys)
    processors = {
        key: proc
        for key in keys
        if key not in serialized and (proc := table.c[key].type.bind_processor(dialect))
    }
    if dialect.name == "postgresql":
        _postgres_unnest(conn, compiled.string, table, keys, data, processors)
        return
    if compiled.positional:
        names = list(compiled.positiontup or ())
        procs = [(i, processors[n]) for i, n in enumerate(names) if n in processors]
        params: list[Any] = []
        for row in data:
            values = [row[n] for n in names]
            for i, proc in procs:
                values[i] = proc(values[i])
            params.append(tuple(values))
    else:
        params = [
            {k: (processors[k](v) if k in processors else v) for k, v in row.items()}
            for row in data
        ]
    conn.exec_driver_sql(compiled.string, params)


def _postgres_unnest(
    conn: sa.Connection,
    compiled_sql: str,
    table: sa.Table,
    keys: list[str],
    data: list[dict[str, Any]],
    processors: dict[str, Any],
) -> None:
    """Run ``INSERT INTO t (cols) SELECT * FROM unnest(%(a)b::type[], ...) <ON CONFLICT>``."""
    dialect = conn.dialect
    quote = dialect.identifier_preparer.quote
    at = compiled_sql.find(" ON CONFLICT")
    conflict = compiled_sql[at:] if at >= 0 else ""
    if "%(" in conflict:  # pragma: no cover - our statements bind nothing there
        raise ValueError("bulk_execute: ON CONFLICT clauses with parameters are not supported")
    # %(key)b: binary parameters; text arrays would be escaped element by element in Python.
    arrays = ", ".join(f"%({key})b::{table.c[key].type.compile(dialect=dialect)}[]" for key in keys)
    sql = (
        f"INSERT INTO {dialect.identifier_preparer.format_table(table)} "
        f"({', '.join(quote(k) for k in keys)}) SELECT * FROM unnest({arrays}){conflict}"
    )
    columns: dict[str, list[Any]] = {}
    for key in keys:
        proc = processors.get(key)
        values = [row[key] for row in data]
        columns[key] = [proc(v) for v in values] if proc is not None else values
    conn.exec_driver_sql(sql, columns)
