"""Fixtures of the pipeline tests: the ``nbflow`` command and an embedded store per test."""

from __future__ import annotations

from tests.cli.conftest import nbflow, nbflow_home
from tests.execution.conftest import client, settings, write_notebook

__all__ = ["client", "nbflow", "nbflow_home", "settings", "write_notebook"]
