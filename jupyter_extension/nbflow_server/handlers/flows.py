"""``/flows``: register (upsert by name), list and read flows."""

from __future__ import annotations

from nbflow.parameters import check_parameters_schema
from nbflow.schemas import Flow
from nbflow_server.handlers.base import NbflowHandler, endpoint
from nbflow_server.handlers.models import FlowList, FlowQuery

__all__ = ["FlowHandler", "FlowsHandler"]


class FlowsHandler(NbflowHandler):
    """``/flows``."""

    @endpoint(
        "read",
        "List flows by name (``?name=`` for the one with that name)",
        query=FlowQuery,
        response=FlowList,
    )
    async def get(self) -> None:
        query = self.parse_query(FlowQuery)
        if query.name is not None:
            items = [await self.call(self.client.read_flow_by_name, query.name)]
        else:
            items = await self.call(self.client.read_flows, limit=query.limit, offset=query.offset)
        self.write_model(FlowList(items=items))

    @endpoint(
        "write",
        "Register a flow, or update the one with the same name",
        body=Flow,
        response=Flow,
        status=201,
    )
    async def post(self) -> None:
        flow = self.parse_body(Flow)
        # A bad schema is refused now, not by a 500 on every later run of the flow.
        check_parameters_schema(flow.parameters_schema, field="body.parameters_schema")
        self.write_model(await self.call(self.client.create_flow, flow), status=201)


class FlowHandler(NbflowHandler):
    """``/flows/{flow_id}``."""

    @endpoint("read", "Read a flow", response=Flow)
    async def get(self, flow_id: str) -> None:
        fid = self.parse_uuid("flow_id", flow_id)
        if self.run_scope is not None:
            run = await self.call(self.client.read_flow_run, self.run_scope)
            if run.flow_id != fid:
                self.require_run_scope(None)
        self.write_model(await self.call(self.client.read_flow, fid))
