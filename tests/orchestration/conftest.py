"""Fixtures for the store tests: one store per test, on SQLite and on PostgreSQL.

PostgreSQL comes from ``NBFLOW_TEST_POSTGRES_URL`` (``scripts/postgres-up.sh`` starts one
and prints it).  Without it the PostgreSQL variants are skipped locally and fail on CI
(``CI`` set), where the server is always provided.  Each PostgreSQL test gets a schema
of its own (through ``search_path``), dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nbflow.orchestration.store import Store
from tests.databases import BACKENDS, database_url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Return the URL of an empty database on each backend."""
    with database_url(request.param, tmp_path / "home") as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """Return a migrated store on a fresh database."""
    opened = Store.from_url(store_url)
    try:
        yield opened
    finally:
        opened.close()
