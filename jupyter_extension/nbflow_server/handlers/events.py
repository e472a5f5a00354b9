"""``/events``: a websocket pushing flow-run and task-run state changes as JSON messages.

``?flow_run_id=<id>`` limits the stream to one run.  Every message is an ``Event``
(``type`` = ``flow_run_state``, ``task_run_state`` or ``deployment``).

``?since=<ISO time>`` replays first what a reconnecting client missed: a
``flow_run_state`` event (``"replay": true``) for every run changed since then (a few
seconds' margin for clocks and late commits; at most :data:`REPLAY_LIMIT`, oldest change
first, then ``{"type": "replay_truncated"}`` if there were more: re-read the list), then
the live stream.  Live events that arrive during the replay are held and sent after it,
so nothing falls in between; a run may come twice, which clients treat as one (the newer
state wins).  Run tokens cannot
open the stream; it needs a Jupyter user authorized to read ``nbflow``.  On PostgreSQL the
stream also carries other servers' events (:mod:`nbflow_server.services.event_relay`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import ioloop, web, websocket

from nbflow.schemas import FlowRunFilter
from nbflow_server.handlers.base import AUTH_RESOURCE, EndpointSpec, flow_run_event

__all__ = ["REPLAY_LIMIT", "EventsHandler"]

#: Most runs one replay sends (a client away longer re-reads its list).
REPLAY_LIMIT = 500
#: How far before ``since`` a replay looks: clock skew between servers, late commits.
REPLAY_MARGIN = timedelta(seconds=5)


def parse_since(text: str | None) -> datetime | None:
    """Return ``?since=`` as an aware time (UTC when no zone); 400 naming it if malformed."""
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise web.HTTPError(
            400, f"query.since={text!r} is not an ISO 8601 time (e.g. 2026-12-03T17:00:00Z)"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class EventsHandler(
    ExtensionHandlerMixin, WebSocketMixin, JupyterHandler, websocket.WebSocketHandler
):
    """``/events``."""

    auth_resource = AUTH_RESOURCE
    _unsubscribe: Callable[[], None] | None = None
    _flow_run_id: str | None = None
    _since: datetime | None = None
    #: Live events held while the replay is read (None: not replaying).
    _held: list[dict[str, Any]] | None = None

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        """Authorize, then upgrade to a websocket."""
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE)
        )
        if not allowed:
            raise web.HTTPError(403, "not authorized to read nbflow events")
        self._flow_run_id = self.get_query_argument("flow_run_id", None)
        self._since = parse_since(self.get_query_argument("since", None))
        result = super().get(*args, **kwargs)
        if result is not None:
            await result

    get.__nbflow_endpoint__ = EndpointSpec(  # type: ignore[attr-defined]
        "read", "Websocket stream of flow-run and task-run state changes (JSON Event messages)"
    )

    def open(self, *args: Any, **kwargs: Any) -> None:
        """Subscribe this socket to the server's event bus (after a replay, if asked)."""
        super().open(*args, **kwargs)
        loop = ioloop.IOLoop.current()
        if self._since is not None:
            self._held = []  # subscribed first: nothing between the replay and live

        def deliver(event: dict[str, Any]) -> None:
            if self._flow_run_id is None or event.get("flow_run_id") == self._flow_run_id:
                loop.add_callback(self._live, event)

        # remote=True: runs of other servers on the same PostgreSQL database too.
        self._unsubscribe = self.extensionapp.event_bus.subscribe(deliver, remote=True)  # type: ignore[attr-defined]
        if self._since is not None:
            loop.add_callback(self._replay, self._since)

    def _live(self, event: dict[str, Any]) -> None:
        if self._held is not None:
            self._held.append(event)
        else:
            self._send(event)

    async def _replay(self, since: datetime) -> None:
        """Send the runs changed since ``since``, then the events held meanwhile."""
        flt = FlowRunFilter(
            updated_after=since - REPLAY_MARGIN,
            sort="updated_asc",
            limit=REPLAY_LIMIT + 1,
        )
        store = self.extensionapp.lifecycle.store  # type: ignore[attr-defined]
        try:
            runs = await asyncio.get_running_loop().run_in_executor(None, store.read_flow_runs, flt)
        except Exception:
            self.log.exception("nbflow: the events replay since %s failed", since)
            runs = None
        if runs is None or len(runs) > REPLAY_LIMIT:
            self._send({"type": "replay_truncated", "since": since.isoformat()})
            runs = (runs or [])[:REPLAY_LIMIT]
        for run in runs:
            if self._flow_run_id is None or str(run.id) == self._flow_run_id:
                self._send({**flow_run_event(run), "replay": True})
        held, self._held = self._held or [], None
        for event in held:
            self._send(event)

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
