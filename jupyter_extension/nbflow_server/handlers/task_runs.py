"""``/task_runs``: batched ingest from engines and runners, filtering, state history."""

from __future__ import annotations

from uuid import UUID

from nbflow.schemas import TaskRunFilter
from nbflow_server.handlers.base import NbflowHandler, RunAccess, endpoint
from nbflow_server.handlers.models import StateList, TaskRunBatch, TaskRunList, TaskRunQuery

__all__ = ["TaskRunBatchHandler", "TaskRunStatesHandler", "TaskRunsHandler"]


class TaskRunBatchHandler(NbflowHandler):
    """``/task_runs/batch``."""

    @endpoint(
        "write",
        "Upsert task-run snapshots and append task-run states in one batch",
        body=TaskRunBatch,
        status=204,
        run_access=RunAccess.CHECKED,
    )
    async def post(self) -> None:
        batch = self.parse_body(TaskRunBatch)
        batch_ids = {t.id for t in batch.task_runs}
        if self.run_scope is not None:
            for task_run in batch.task_runs:
                self.require_run_scope(task_run.flow_run_id)
            foreign = {s.task_run_id for s in batch.states} - batch_ids
            if foreign:
                owned = await self._task_run_ids_of(self.run_scope)
                if foreign - owned:
                    self.require_run_scope(None)
        states = [(s.task_run_id, s.state) for s in batch.states]
        await self.call(self.client.write_task_runs, batch.task_runs, states)
        latest = {s.task_run_id: s.state for s in batch.states}
        for task_run in batch.task_runs:
            state = latest.get(task_run.id, task_run.state)
            self.publish(
                {
                    "type": "task_run_state",
                    "flow_run_id": str(task_run.flow_run_id) if task_run.flow_run_id else None,
                    "task_run": task_run.model_dump(mode="json"),
                    "state": state.model_dump(mode="json") if state else None,
                }
            )
        self.write_empty()

    async def _task_run_ids_of(self, flow_run_id: UUID) -> set[UUID]:
        runs = await self.call(
            self.client.read_task_runs, TaskRunFilter(flow_run_ids=[flow_run_id], limit=100_000)
        )
        return {t.id for t in runs}


class TaskRunsHandler(NbflowHandler):
    """``/task_runs``."""

    @endpoint(
        "read",
        "Filter task runs by flow run and state type, oldest first",
        query=TaskRunQuery,
        response=TaskRunList,
        run_access=RunAccess.CHECKED,
    )
    async def get(self) -> None:
        query = self.parse_query(TaskRunQuery)
        if self.run_scope is not None and query.flow_run_ids != [self.run_scope]:
            self.require_run_scope(None)
        flt = TaskRunFilter(**query.model_dump())
        self.write_model(TaskRunList(items=await self.call(self.client.read_task_runs, flt)))


class TaskRunStatesHandler(NbflowHandler):
    """``/task_runs/{task_run_id}/states``."""

    @endpoint(
        "read",
        "A task run's state history, oldest first",
        response=StateList,
        run_access=RunAccess.CHECKED,
    )
    async def get(self, task_run_id: str) -> None:
        tid = self.parse_uuid("task_run_id", task_run_id)
        if self.run_scope is not None:
            runs = await self.call(
                self.client.read_task_runs,
                TaskRunFilter(flow_run_ids=[self.run_scope], limit=100_000),
            )
            if tid not in {t.id for t in runs}:
                self.require_run_scope(None)
        self.write_model(StateList(items=await self.call(self.client.read_task_run_states, tid)))
