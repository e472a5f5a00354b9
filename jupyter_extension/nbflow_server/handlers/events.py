"""``/events``: a websocket pushing flow-run and task-run state changes as JSON messages.

``?flow_run_id=<id>`` limits the stream to one run.  Every message is an ``Event``
(``type`` = ``flow_run_state``, ``task_run_state`` or ``deployment``).  Run tokens cannot
open the stream; it needs a Jupyter user authorized to read ``nbflow``.  On PostgreSQL the
stream also carries other servers' events (:mod:`nbflow_server.services.event_relay`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import ioloop, web, websocket

from nbflow_server.handlers.base import AUTH_RESOURCE, EndpointSpec

__all__ = ["EventsHandler"]


class EventsHandler(
    ExtensionHandlerMixin, WebSocketMixin, JupyterHandler, websocket.WebSocketHandler
):
    """``/events``."""

    auth_resource = AUTH_RESOURCE
    _unsubscribe: Callable[[], None] | None = None
    _flow_run_id: str | None = None

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Authorize, then upgrade to a websocket."""
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE)
        )
        if not allowed:
            raise web.HTTPError(403, "not authorized to read nbflow events")
        self._flow_run_id = self.get_query_argument("flow_run_id", None)
        result = super().get(*args, **kwargs)
        if result is not None:
            await result

    get.__nbflow_endpoint__ = EndpointSpec(  # type: ignore[attr-defined]
        "read", "Websocket stream of flow-run and task-run state changes (JSON Event messages)"
    )

    def open(self, *args: Any, **kwargs: Any) -> None:
        """Subscribe this socket to the server's event bus."""
        super().open(*args, **kwargs)
        loop = ioloop.IOLoop.current()

        def deliver(event: dict[str, Any]) -> None:
            if self._flow_run_id is None or event.get("flow_run_id") == self._flow_run_id:
                loop.add_callback(self._send, event)

        # remote=True: runs of other servers on the same PostgreSQL database too.
        self._unsubscribe = self.extensionapp.event_bus.subscribe(deliver, remote=True)  # type: ignore[attr-defined]

    def _send(self, event: dict[str, Any]) -> None:
        try:
            self.write_message(json.dumps(event))
        except websocket.WebSocketClosedError:
            self.on_close()

    def on_message(self, message: str | bytes) -> None:
        """Ignore client messages: the stream is one-way."""

    def on_close(self) -> None:
        """Unsubscribe from the event bus."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
