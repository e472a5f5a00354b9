"""Helpers shared by the server tests."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import nbformat

__all__ = ["API", "Api", "make_notebook"]

API = ("nbflow", "api", "v1")

#: ``await api("POST", "flows", body={...})`` -> (status, JSON body or None).
Api = Callable[..., Awaitable[tuple[int, Any]]]


def make_notebook(cells: list[str] | None = None) -> dict[str, Any]:
    """Return a minimal valid nbformat 4 notebook with code cells."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (cells or ["x = 1"])]
    return json.loads(nbformat.writes(nb))
