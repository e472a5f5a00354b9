"""Fixtures for the server extension: a live jupyter_server (pytest-jupyter) with nbflow_server.

``jp_serverapp``/``jp_fetch``/``jp_ws_fetch`` come from pytest-jupyter; the server runs
in-process with only nbflow's extension, its own SQLite store and secret under tmp_path,
and the services off (the API tests drive the store directly).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403  (fixtures and hooks of pytest-jupyter)
from tornado.httpclient import HTTPClientError, HTTPResponse

from nbflow_server import NbflowApp
from tests.server.helpers import API, Api


@pytest.fixture
def jp_server_config(tmp_path: Path) -> dict[str, Any]:
    """Load only nbflow_server, with a store and secret of this test."""
    return {
        "ServerApp": {"jpserver_extensions": {"nbflow_server": True}},
        "NbflowApp": {
            "db_url": f"sqlite:///{tmp_path / 'nbflow.db'}",
            "secret_file": str(tmp_path / "secret"),
            "services_enabled": False,
        },
    }


@pytest.fixture
def nbflow_app(jp_serverapp: Any) -> NbflowApp:
    """The NbflowApp loaded into the test server."""
    point = jp_serverapp.extension_manager.extension_points["nbflow"]
    app = point.app
    assert isinstance(app, NbflowApp)
    return app


@pytest.fixture
def api(jp_fetch: Any, nbflow_app: NbflowApp) -> Api:
    """Call the nbflow API: ``await api("POST", "flows", body={...})`` → (status, JSON or None).

    HTTP errors are returned, not raised, so tests can assert on the status and body.
    """

    async def call(
        method: str,
        *path: str,
        body: Any = None,
        params: dict[str, Any] | list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"method": method, "headers": headers or {}}
        if body is not None or method in ("POST", "PATCH", "PUT"):
            kwargs["body"] = json.dumps(body if body is not None else {})
        try:
            response: HTTPResponse = await jp_fetch(*API, *path, params=params, **kwargs)
        except HTTPClientError as exc:
            assert exc.response is not None, exc
            response = exc.response
        text = response.body.decode() if response.body else ""
        return response.code, (json.loads(text) if text else None)

    return call
