"""Dispatch: claim due runs, start them on their runner, watch them and stop them on cancel.

:class:`~nbflow.dispatch.dispatcher.Dispatcher` is the one dispatcher.  It works over any
:class:`~nbflow.client.base.Client`: the server's service loop drives it over the embedded
client, ``nbflow worker`` drives it over the HTTP client.  It imports the client
interface and the runners, never the server extension or the engine.
"""

from __future__ import annotations

from nbflow.dispatch.dispatcher import Dispatcher, RunnerPool

__all__ = ["Dispatcher", "RunnerPool"]
