"""The OpenAPI document matches the route table the server actually serves."""

from __future__ import annotations

import re
from typing import Any

from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from nbflow_server.handlers import ROUTES
from nbflow_server.openapi import HTTP_METHODS, openapi_path
from tests.server.helpers import Api


async def test_openapi_document_matches_route_table(api: Api, jp_serverapp: Any) -> None:
    status, doc = await api("GET", "openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.1")

    served: set[tuple[str, str]] = set()
    for route in ROUTES:
        for method in HTTP_METHODS:
            if method in vars(route.handler) or any(
                method in vars(base)
                for base in route.handler.__mro__[1:]
                if base.__module__.startswith("nbflow_server")
            ):
                served.add((openapi_path(route.path), method))
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented

    # Every documented path is really routed, to the handler of the table, by the live server.
    handlers = {openapi_path(route.path): route.handler for route in ROUTES}
    for path in doc["paths"]:
        concrete = re.sub(r"\{\w+\}", "00000000-0000-0000-0000-000000000000", path)
        start = RequestStartLine("GET", f"{jp_serverapp.base_url}{concrete[1:]}", "HTTP/1.1")
        request = HTTPServerRequest(start_line=start, headers=HTTPHeaders({"Host": "localhost"}))
        delegate = jp_serverapp.web_app.find_handler(request)
        assert delegate.handler_class is handlers[path], path

    # Every referenced schema is defined.
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', str(doc).replace("'", '"')))
    assert refs <= set(doc["components"]["schemas"])


async def test_openapi_describes_bodies_and_queries(api: Api) -> None:
    _, doc = await api("GET", "openapi.json")
    create = doc["paths"]["/nbflow/api/v1/flow_runs"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/FlowRunCreate"
    )
    params = {p["name"] for p in doc["paths"]["/nbflow/api/v1/flow_runs"]["get"]["parameters"]}
    assert {"state_types", "flow_ids", "deployment_ids", "limit", "offset"} <= params
    set_state = doc["paths"]["/nbflow/api/v1/flow_runs/{flow_run_id}/set_state"]["post"]
    assert set_state["parameters"][0] == {
        "name": "flow_run_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    assert set_state["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/OrchestrationResult"
    )
