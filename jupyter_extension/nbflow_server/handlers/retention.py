"""``/flow_runs/prune``: delete one batch of old finished runs (``nbflow runs prune``).

Users only (no run token opens it: docs/security.md).  Each request deletes at most
``batch_size`` runs — with their task runs, states, logs, artifacts, result files and the
output notebooks nbflow wrote for them (:mod:`nbflow.engine.retention`) — and says
whether more are left, so a client prunes a large store request by request, showing
progress, and the API is never held up by one long transaction.  ``dry_run`` deletes
nothing and counts what a whole prune would delete.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from nbflow.engine.retention import DEFAULT_BATCH_SIZE, prune_batch
from nbflow_server.handlers.base import NbflowHandler, endpoint

__all__ = ["FlowRunsPruneHandler", "PruneRequest", "PruneResult"]


class PruneRequest(BaseModel):
    """Which runs to prune: finished (terminal) more than ``older_than_seconds`` ago."""

    model_config = ConfigDict(extra="forbid")

    #: At least a second: a smaller age is no age (timedelta keeps microseconds).
    older_than_seconds: float = Field(ge=1, le=100 * 365 * 86400)
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, le=10_000)
    dry_run: bool = False


class PruneResult(BaseModel):
    """What the request deleted (a dry run: what a whole prune would delete)."""

    cutoff: datetime
    dry_run: bool
    runs: int
    task_runs: int
    logs: int
    states: int
    artifacts: int
    files: int
    #: Whether prunable runs are left: send the request again.
    more: bool


class FlowRunsPruneHandler(NbflowHandler):
    """``/flow_runs/prune``."""

    @endpoint(
        "write",
        "Delete one batch of terminal flow runs that ended before now - older_than_seconds, "
        "with their task runs, logs, artifacts, results and output notebooks (dry_run: count)",
        body=PruneRequest,
        response=PruneResult,
    )
    async def post(self) -> None:
        request = self.parse_body(PruneRequest)
        summary = await self.call(
            prune_batch,
            self.nbflow.lifecycle.store,
            older_than=timedelta(seconds=request.older_than_seconds),
            batch_size=request.batch_size,
            dry_run=request.dry_run,
        )
        c = summary.counts
        self.write_model(
            PruneResult(
                cutoff=summary.cutoff,
                dry_run=summary.dry_run,
                runs=c.runs,
                task_runs=c.task_runs,
                logs=c.logs,
                states=c.states,
                artifacts=c.artifacts,
                files=summary.files,
                more=summary.more,
            )
        )
