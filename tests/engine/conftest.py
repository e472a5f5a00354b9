"""Fixtures: a real embedded store (SQLite file) and result directory per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nbflow.client import set_client
from nbflow.client.embedded import EmbeddedClient
from nbflow.settings import reload_settings


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedClient]:
    """Install an EmbeddedClient on a fresh SQLite file under ``NBFLOW_HOME=tmp_path``."""
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("NBFLOW_API_URL", raising=False)
    monkeypatch.delenv("NBFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("NBFLOW_RESULTS_URL", raising=False)
    settings = reload_settings()
    client = EmbeddedClient.from_url(settings.database_url)
    old = set_client(client)
    yield client
    set_client(old)
    client.close()
    monkeypatch.undo()
    reload_settings()
