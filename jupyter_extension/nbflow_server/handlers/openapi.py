"""``/openapi.json``: the API's OpenAPI 3.1 document, built from the route table."""

from __future__ import annotations

import json

import nbflow
from nbflow_server.handlers.base import NbflowHandler, endpoint
from nbflow_server.openapi import build_openapi

__all__ = ["OpenAPIHandler"]


class OpenAPIHandler(NbflowHandler):
    """``/openapi.json``."""

    @endpoint("read", "This OpenAPI 3.1 document", raw_response="application/json")
    async def get(self) -> None:
        document = build_openapi(self.nbflow.routes, version=getattr(nbflow, "__version__", "0"))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(document))
