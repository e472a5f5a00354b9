"""The route type and the API prefix (kept apart so the OpenAPI builder can import them)."""

from __future__ import annotations

from dataclasses import dataclass

from tornado.web import RequestHandler

__all__ = ["API_PREFIX", "ID", "Route"]

API_PREFIX = "nbflow/api/v1"

#: A path segment captured as an id (validated as a UUID by the handler).
ID = r"[^/]+"


@dataclass(frozen=True)
class Route:
    """A URL pattern (below the API prefix) and the handler serving it."""

    path: str
    handler: type[RequestHandler]
