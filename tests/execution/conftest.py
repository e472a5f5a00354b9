"""Fixtures for notebook execution: an isolated NBFLOW_HOME with its embedded store."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nbflow.client import set_client
from nbflow.client.embedded import EmbeddedClient
from nbflow.notebook import document as nbs
from nbflow.settings import Settings, reload_settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / "home"))
    for name in ("NBFLOW_API_URL", "NBFLOW_DATABASE_URL", "NBFLOW__FLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    s = reload_settings()
    s.home.mkdir(parents=True, exist_ok=True)
    yield s
    monkeypatch.undo()
    reload_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[EmbeddedClient]:
    c = EmbeddedClient.from_url(settings.database_url)
    old = set_client(c)
    yield c
    set_client(old)
    c.close()


@pytest.fixture
def write_notebook(tmp_path: Path) -> Callable[..., Path]:
    """Write a notebook of code cells; ``parameters=i`` tags cell i as papermill's."""

    def write(name: str, sources: list[str], parameters: int | None = None) -> Path:
        nb = nbs.new_notebook(sources)
        if parameters is not None:
            nb["cells"][parameters]["metadata"]["tags"] = [nbs.PARAMETERS_TAG]
        path = tmp_path / name
        path.write_text(json.dumps(nb))
        return path

    return write
