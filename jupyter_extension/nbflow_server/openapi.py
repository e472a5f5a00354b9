"""Build the OpenAPI 3.1 document from the route table and the endpoints' pydantic models.

The document is derived from the same :data:`~nbflow_server.handlers.ROUTES` that the
server registers, so it cannot drift from the implementation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pydantic
from pydantic.json_schema import models_json_schema

from nbflow_server.handlers.base import EndpointSpec
from nbflow_server.handlers.models import ErrorBody
from nbflow_server.handlers.routes import API_PREFIX, Route

__all__ = ["HTTP_METHODS", "build_openapi", "endpoints", "openapi_path"]

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")
_REF = "#/components/schemas/{model}"


def openapi_path(route_path: str) -> str:
    """Turn a route regex (``/flow_runs/(?P<flow_run_id>[^/]+)``) into an OpenAPI path."""
    return f"/{API_PREFIX}" + _GROUP.sub(lambda m: "{" + m.group(1) + "}", route_path)


def endpoints(routes: Sequence[Route]) -> list[tuple[str, str, EndpointSpec]]:
    """Return ``(openapi path, method, spec)`` for every endpoint method of the routes."""
    found = []
    for route in routes:
        for method in HTTP_METHODS:
            fn = getattr(route.handler, method, None)
            spec = getattr(fn, "__nbflow_endpoint__", None)
            if spec is not None:
                found.append((openapi_path(route.path), method, spec))
    return found


def _query_parameters(model: type[pydantic.BaseModel], schemas: dict[str, Any]) -> list[Any]:
    schema = model.model_json_schema(ref_template=_REF)
    schemas.update(schema.pop("$defs", {}))
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def build_openapi(routes: Sequence[Route], *, version: str) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of ``routes``."""
    found = endpoints(routes)
    models: set[type[pydantic.BaseModel]] = {ErrorBody}
    for _, _, spec in found:
        models.update(m for m in (spec.body, spec.response) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, defs = models_json_schema([(m, "validation") for m in ordered], ref_template=_REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    error = {
        "description": "error",
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorBody")}}},
    }
    for path, method, spec in found:
        operation: dict[str, Any] = {
            "summary": spec.summary,
            "operationId": f"{method}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
            "security": [{"jupyter_token": []}],
            "x-nbflow-action": spec.action,
            "x-nbflow-run-token": spec.run_access.value,
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"\{(\w+)\}", path)
        ]
        if spec.query is not None:
            parameters += _query_parameters(spec.query, schemas)
        if parameters:
            operation["parameters"] = parameters
        if spec.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": _REF.format(model=spec.body.__name__)}}
                },
            }
        responses: dict[str, Any] = {}
        if spec.response is not None:
            responses[str(spec.status)] = {
                "description": "success",
                "content": {
                    "application/json": {
                        "schema": {"$ref": _REF.format(model=spec.response.__name__)}
                    }
                },
            }
        elif spec.raw_response is not None:
            responses[str(spec.status)] = {
                "description": "success",
                "content": {spec.raw_response: {"schema": {"type": "object"}}},
            }
        elif path.endswith("/events"):
            responses["101"] = {"description": "switching to the websocket event stream"}
        else:
            responses[str(spec.status)] = {"description": "success, no content"}
        for code in ("400", "403", "404", "409"):
            responses[code] = error
        operation["responses"] = responses
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nbflow orchestration API",
            "version": version,
            "description": "Flows, deployments, flow runs, task runs, logs, artifacts and events "
            "of nbflow, served by its Jupyter server extension.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "jupyter_token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "'token <Jupyter token>' or, for a runner, "
                    "'token nbflow-run.<run id>.<signature>'",
                }
            },
        },
    }
