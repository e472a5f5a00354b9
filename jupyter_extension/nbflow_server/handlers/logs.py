"""``/logs``: batched ingest and cursor-paged reading of run logs."""

from __future__ import annotations

from nbflow_server.handlers.base import NbflowHandler, endpoint
from nbflow_server.handlers.models import LogBatch, LogPageBody, LogQuery

__all__ = ["LogBatchHandler", "LogsHandler"]


class LogBatchHandler(NbflowHandler):
    """``/logs/batch``."""

    @endpoint(
        "write",
        "Append a batch of log records",
        body=LogBatch,
        status=204,
    )
    async def post(self) -> None:
        batch = self.parse_body(LogBatch)
        for log in batch.logs:
            self.require_run_scope(log.flow_run_id)
        await self.require_own_task_runs(log.task_run_id for log in batch.logs)
        await self.call(self.client.write_logs, batch.logs)
        self.write_empty()


class LogsHandler(NbflowHandler):
    """``/logs``."""

    @endpoint(
        "read",
        "A run's logs after a cursor (0: from the start), oldest first, with the next cursor",
        query=LogQuery,
        response=LogPageBody,
    )
    async def get(self) -> None:
        query = self.parse_query(LogQuery)
        self.require_run_scope(query.flow_run_id)
        page = await self.call(
            self.client.read_logs,
            query.flow_run_id,
            cursor=query.cursor,
            limit=query.limit,
            task_run_id=query.task_run_id,
        )
        self.write_model(LogPageBody(logs=page.logs, cursor=page.cursor))
