"""Fixtures for the runner tests (see :mod:`tests.runners.live`)."""

from __future__ import annotations

from tests.runners.live import live_server

__all__ = ["live_server"]
