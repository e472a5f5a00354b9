"""``/flow_runs/claim`` and ``/concurrency_limits``: dispatching runs within limits.

``nbflow worker`` claims through ``POST /flow_runs/claim``: the server's lifecycle picks
the due runs of the worker's runners that fit every concurrency limit, in one store
transaction shared with the server's own dispatcher, and answers each with its merged
job variables and its run token.  With ``wait_seconds`` the request is a long poll
(:mod:`nbflow_server.services.claim_signal`).  Users only: a run token claims nothing.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from nbflow.client.http import MAX_CLAIM_WAIT
from nbflow.schemas import ClaimedRun, ConcurrencyLimit
from nbflow_server.handlers.base import NbflowHandler, endpoint, flow_run_event
from nbflow_server.services.claim_signal import RECHECK_SECONDS

__all__ = [
    "ClaimRequest",
    "ClaimedRunList",
    "ConcurrencyLimitHandler",
    "ConcurrencyLimitList",
    "ConcurrencyLimitsHandler",
    "FlowRunClaimHandler",
]


class ClaimRequest(BaseModel):
    """Which runs to claim, for whom, and how many at most."""

    model_config = ConfigDict(extra="forbid")

    runners: list[str] = Field(min_length=1, max_length=50)
    claimer: str = Field(min_length=1, max_length=200)
    limit: int | None = Field(default=None, ge=1, le=1000)
    #: A long poll: when nothing is due, hold the request until a run is, or this long.
    wait_seconds: float = Field(default=0.0, ge=0, le=MAX_CLAIM_WAIT)


class ClaimedRunList(BaseModel):
    """The runs claimed, each now Pending."""

    items: list[ClaimedRun]


class ConcurrencyLimitList(BaseModel):
    """Every flow and tag concurrency limit."""

    items: list[ConcurrencyLimit]


class ConcurrencyLimitUpdate(BaseModel):
    """The new limit of a key (0 holds every run back)."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(ge=0, le=1_000_000)


class FlowRunClaimHandler(NbflowHandler):
    """``/flow_runs/claim``."""

    @endpoint(
        "execute",
        "Claim due batch runs of some runners within every concurrency limit (for workers); "
        "wait_seconds: when none is due, wait up to that long for one (a long poll)",
        body=ClaimRequest,
        response=ClaimedRunList,
    )
    async def post(self) -> None:
        request = self.parse_body(ClaimRequest)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.wait_seconds
        while True:
            claimed = await self.call(
                self.client.claim_flow_runs,
                request.runners,
                claimer=request.claimer,
                limit=request.limit,
            )
            left = deadline - loop.time()
            if claimed or left <= 0:
                break
            await self.nbflow.claim_signal.wait(min(left, RECHECK_SECONDS))
            stream = getattr(self.request.connection, "stream", None)
            if stream is not None and stream.closed():
                return  # the worker went away while held: claim nothing for it
        for c in claimed:
            self.publish(flow_run_event(c.flow_run))
        self.write_model(ClaimedRunList(items=claimed))


class ConcurrencyLimitsHandler(NbflowHandler):
    """``/concurrency_limits``."""

    @endpoint("read", "List the flow and tag concurrency limits", response=ConcurrencyLimitList)
    async def get(self) -> None:
        items = await self.call(self.client.read_concurrency_limits)
        self.write_model(ConcurrencyLimitList(items=items))


class ConcurrencyLimitHandler(NbflowHandler):
    """``/concurrency_limits/{key}`` (``flow:<name>`` or ``tag:<tag>``)."""

    @endpoint(
        "write",
        "Set the limit of flow:<name> or tag:<tag> (batch runs holding a slot at once)",
        body=ConcurrencyLimitUpdate,
        response=ConcurrencyLimit,
    )
    async def put(self, key: str) -> None:
        update = self.parse_body(ConcurrencyLimitUpdate)
        limit = await self.call(self.client.set_concurrency_limit, key, update.limit)
        self.nbflow.wake_dispatcher()  # a higher limit may free slots now
        self.write_model(limit)

    @endpoint("write", "Remove the limit of flow:<name> or tag:<tag>", status=204)
    async def delete(self, key: str) -> None:
        await self.call(self.client.delete_concurrency_limit, key)
        self.nbflow.wake_dispatcher()
        self.write_empty()
