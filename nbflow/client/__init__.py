"""Clients: one interface (:class:`Client`), an embedded implementation over the store and
(with the server extension) an HTTP implementation with the same interface.

:func:`get_client` picks one from the settings: HTTP when ``NBFLOW_API_URL`` is set,
otherwise the embedded store under ``NBFLOW_HOME``.  Implementations are imported lazily
so ``import nbflow`` stays free of SQLAlchemy and httpx.
"""

from __future__ import annotations

import threading

from nbflow.client.base import Client, LogPage

__all__ = ["Client", "LogPage", "get_client", "set_client"]

_lock = threading.Lock()
_client: Client | None = None


def get_client() -> Client:
    """Return the process-wide client, creating it from the settings on first use."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                from nbflow.settings import get_settings

                settings = get_settings()
                if settings.uses_server:
                    from nbflow.client.http import HTTPClient  # type: ignore[import-not-found,unused-ignore]

                    _client = HTTPClient(settings.api_url or "", token=settings.api_token)
                else:
                    from nbflow.client.embedded import EmbeddedClient

                    _client = EmbeddedClient.from_url(settings.database_url)
    return _client


def set_client(client: Client | None) -> Client | None:
    """Install ``client`` as the process-wide client (None: re-read settings); return the old one."""
    global _client
    with _lock:
        old, _client = _client, client
    return old
