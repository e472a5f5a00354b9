"""Migrations on first open, the migrated schema, and engine settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from nbflow.orchestration.store import Store, normalize_url
from nbflow.orchestration.store.database import (
    HEAD_REVISION,
    alembic_config,
    current_revision,
    head_revision,
)
from nbflow.orchestration.store.tables import metadata


def test_head_constant_matches_the_migrations_folder() -> None:
    assert head_revision() == HEAD_REVISION


def test_a_fresh_database_is_migrated_on_first_open(store_url: str) -> None:
    store = Store.from_url(store_url)
    try:
        with store.engine.connect() as conn:
            assert current_revision(conn) == HEAD_REVISION
            tables = set(sa.inspect(conn).get_table_names())
        assert {t.name for t in metadata.sorted_tables} <= tables
        # Opening again finds it current and changes nothing.
        Store.from_url(store_url).close()
    finally:
        store.close()


def test_the_migrated_schema_is_the_tables_module(store_url: str) -> None:
    store = Store.from_url(store_url)
    try:
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
    finally:
        store.close()


def test_migrations_downgrade_to_nothing_and_back(store_url: str) -> None:
    store = Store.from_url(store_url)
    try:
        with store.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        with store.engine.connect() as conn:
            assert current_revision(conn) is None
            assert not sa.inspect(conn).has_table("flow_runs")
        Store.from_url(store_url).close()
        with store.engine.connect() as conn:
            assert current_revision(conn) == HEAD_REVISION
    finally:
        store.close()


def test_sqlite_settings_and_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "nbflow.db"
    store = Store.from_url(f"sqlite:///{path}")
    try:
        assert path.exists()
        with store.engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
            }
        assert pragma["journal_mode"] == "wal"
        assert pragma["foreign_keys"] == 1
        assert pragma["synchronous"] == 1  # NORMAL
        assert pragma["busy_timeout"] >= 10_000
    finally:
        store.close()


def test_in_memory_sqlite_works_across_threads() -> None:
    import threading

    from nbflow.schemas import Flow

    store = Store.from_url("sqlite://")
    errors: list[BaseException] = []

    def register(i: int) -> None:
        try:
            store.create_flow(Flow(name=f"f{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(store.read_flows()) == 8


def test_urls_pick_the_drivers() -> None:
    assert normalize_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(ValueError, match="unsupported"):
        normalize_url("mysql://u@h/db")


def test_sqlite_path_with_a_tilde_is_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    store = Store.from_url("sqlite:///~/nbhome/nbflow.db")
    try:
        assert (tmp_path / "nbhome" / "nbflow.db").exists()
    finally:
        store.close()


def test_a_forked_child_uses_its_own_connections(tmp_path: Path) -> None:
    import os

    from nbflow.schemas import Flow

    store = Store.from_url(f"sqlite:///{tmp_path / 'nbflow.db'}")
    store.create_flow(Flow(name="parent"))  # the pool now holds a connection
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        try:
            store.create_flow(Flow(name="child"))
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [f.name for f in store.read_flows()] == ["child", "parent"]
    store.close()


def test_run_with_retry_outlasts_a_held_write_lock(tmp_path: Path) -> None:
    import sqlite3

    from nbflow.orchestration.store.database import is_retryable, run_with_retry

    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    # A writer that does not wait at all, so the held lock surfaces as an error.
    impatient = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    attempts: list[int] = []

    def write() -> None:
        attempts.append(1)
        if len(attempts) == 2:
            holder.execute("COMMIT")  # the other writer finishes while we back off
        with impatient.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")

    try:
        run_with_retry(write)
        assert len(attempts) == 2  # the first attempt met the lock
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        impatient.dispose()
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM t").fetchone() == (1,)
    assert not is_retryable(ValueError("database is locked"))
