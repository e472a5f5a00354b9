"""Engines for the store: SQLite (embedded default) and PostgreSQL, plus migrations.

SQLite is tuned for several processes writing one file at once: WAL journal (readers never
block the writer), ``busy_timeout`` (a writer waits for the lock instead of failing),
``synchronous=NORMAL`` (safe with WAL), foreign keys on, and every write transaction begins
with ``BEGIN IMMEDIATE`` so it takes the write lock up front: a deferred transaction that
reads first and writes later cannot upgrade its lock while another process writes, and
SQLite answers that with an immediate "database is locked" that no timeout helps.  This is
the pysqlite recipe from SQLAlchemy's documentation (driver autocommit off, our own BEGIN).

PostgreSQL URLs (``postgresql://``) use the psycopg 3 driver.  Migrations run on first open
under a lock (the SQLite write lock, ``pg_advisory_xact_lock`` on PostgreSQL), so processes
that open a fresh database together do not race.
"""

from __future__ import annotations

import logging
import os
import random
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import StaticPool

__all__ = [
    "BUSY_TIMEOUT_MS",
    "alembic_config",
    "HEAD_REVISION",
    "current_revision",
    "head_revision",
    "create_engine",
    "is_retryable",
    "migrate",
    "normalize_url",
    "run_with_retry",
    "write_engine",
]

log = logging.getLogger("nbflow.store")

T = TypeVar("T")

#: How long a SQLite writer waits for another process's write lock before failing.
BUSY_TIMEOUT_MS = 60_000
#: Execution option naming the ``BEGIN`` flavour of a SQLite transaction.
_BEGIN_OPTION = "nbflow_sqlite_begin"
#: Key of the PostgreSQL advisory lock that serializes migrations (any fixed 64-bit number).
_MIGRATION_LOCK_KEY = 0x6E62_666C_6F77  # "nbflow"
_MIGRATIONS = Path(__file__).with_name("migrations")
#: The newest revision in ``migrations/versions``: bump it with every new migration (a test
#: checks).  Knowing it lets an up-to-date database open without importing Alembic.
HEAD_REVISION = "0005"


def normalize_url(url: str | URL) -> URL:
    """Return ``url`` with nbflow's drivers: psycopg 3 for PostgreSQL, pysqlite for SQLite."""
    parsed = make_url(url) if isinstance(url, str) else url
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise ValueError(
            f"database URL {parsed.render_as_string(hide_password=True)!r}: unsupported "
            "database; use sqlite:///path/to/nbflow.db or postgresql://user:pw@host/db"
        )
    return parsed


def create_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` (creating a SQLite file's folder) with nbflow's tuning."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        engine = sa.create_engine(parsed, **kwargs)
        _forget_pool_after_fork(engine)
        return engine
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if in_memory:
        # One shared connection; the Store serializes access to it with a lock.
        kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("connect_args", {"check_same_thread": False})
    else:
        path = Path(database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        parsed = parsed.set(database=str(path))
        kwargs.setdefault("connect_args", {"timeout": BUSY_TIMEOUT_MS / 1000})
    engine = sa.create_engine(parsed, **kwargs)
    _install_sqlite_hooks(engine, in_memory=in_memory)
    _forget_pool_after_fork(engine)
    return engine


def _forget_pool_after_fork(engine: Engine) -> None:
    """Give a forked child fresh connections (a connection must never cross a fork)."""
    ref = weakref.ref(engine)

    def after_fork() -> None:
        alive = ref()
        if alive is not None:
            alive.dispose(close=False)

    os.register_at_fork(after_in_child=after_fork)


def _install_sqlite_hooks(engine: Engine, *, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Driver autocommit: pysqlite must not emit its own BEGIN; we do it in "begin".
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                _retry_locked(lambda: cursor.execute("PRAGMA journal_mode = WAL"))
            cursor.execute("PRAGMA synchronous = NORMAL")
            # 64 MiB page cache (allocated on use): a 10,000-task-run batch never spills.
            cursor.execute("PRAGMA cache_size = -65536")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def write_engine(engine: Engine) -> Engine:
    """Return a view of ``engine`` whose transactions take the write lock at BEGIN (SQLite)."""
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


def _retry_locked(fn: Callable[[], Any], attempts: int = 50) -> Any:
    """Call a raw sqlite3 operation, retrying while another process holds the lock."""
    import sqlite3

    for attempt in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if attempt == attempts - 1:
                raise
            time.sleep(min(0.5, 0.01 * 2**attempt) * random.uniform(0.5, 1.0))
    return None


def is_retryable(exc: BaseException) -> bool:
    """Whether a database error is a lock or serialization conflict worth retrying."""
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    text = str(exc.orig).lower()
    if isinstance(exc, OperationalError) and ("database is locked" in text or "busy" in text):
        return True
    # PostgreSQL: serialization_failure, deadlock_detected.
    return getattr(exc.orig, "sqlstate", None) in ("40001", "40P01")


def run_with_retry(fn: Callable[[], T], *, attempts: int = 8) -> T:
    """Call ``fn``, retrying with jittered exponential backoff on lock conflicts.

    The SQLite lock settings make this a last resort: ``BEGIN IMMEDIATE`` plus
    ``busy_timeout`` already queue writers.  ``fn`` must be a whole transaction.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except DBAPIError as exc:
            if not is_retryable(exc) or attempt == attempts - 1:
                raise
            delay = min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0)
            log.warning("database busy (%s); retrying in %.2f s", exc.orig, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def alembic_config(connection: sa.Connection) -> Any:
    """Return an Alembic config for nbflow's migrations that runs on ``connection``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """Return the newest migration revision shipped with this nbflow."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {_MIGRATIONS}")
    return head


def current_revision(connection: sa.Connection) -> str | None:
    """Return the database's migration revision (None for a fresh database)."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars()
    found = list(versions)
    return found[0] if len(found) == 1 else None


def migrate(engine: Engine) -> None:
    """Bring the database to the newest revision; safe when several processes do it at once."""
    with engine.connect() as conn:
        if current_revision(conn) == HEAD_REVISION:
            return
    head = head_revision()

    def upgrade() -> None:
        from alembic import command

        with write_engine(engine).begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            # Re-check under the lock: another process may have migrated meanwhile.
            if current_revision(conn) != head:
                log.info("migrating the nbflow store to revision %s", head)
                command.upgrade(alembic_config(conn), "head")

    run_with_retry(upgrade)
