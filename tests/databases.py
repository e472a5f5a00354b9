"""A fresh database per test, on SQLite and on PostgreSQL.

PostgreSQL comes from ``NBFLOW_TEST_POSTGRES_URL`` (``scripts/postgres-up.sh`` starts one
and prints it).  Without it the PostgreSQL variants are skipped locally and fail on CI
(``CI`` set), where the server is always provided.  Each PostgreSQL test gets a schema of
its own (through ``search_path``), dropped afterwards — after cutting off any connection
still using it (a server or run process that is still shutting down would otherwise
deadlock the ``DROP``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

__all__ = ["BACKENDS", "database_url", "postgres_base_url"]

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def postgres_base_url() -> str:
    """Return the test server's URL; skip (locally) or fail (CI) when there is none."""
    url = os.environ.get("NBFLOW_TEST_POSTGRES_URL")
    if not url:
        reason = (
            "NBFLOW_TEST_POSTGRES_URL is not set; start a server with "
            '`eval "$(scripts/postgres-up.sh | tail -n 1)"`'
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide PostgreSQL: {reason}")
        pytest.skip(reason)
    return url


@contextmanager
def database_url(backend: str, directory: Path) -> Iterator[str]:
    """Yield the URL of an empty database on ``backend`` (SQLite files go in ``directory``)."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'nbflow.db'}"
        return
    base = make_url(postgres_base_url()).set(drivername="postgresql+psycopg")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        url = base.update_query_dict(
            {"options": f"-csearch_path={schema}", "application_name": schema}
        )
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": schema},
            )
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
