"""``/task_runs``: batched ingest from engines and runners, filtering, state history."""

from __future__ import annotations

from nbflow.schemas import TaskRunFilter
from nbflow_server.handlers.base import ApiError, NbflowHandler, endpoint
from nbflow_server.handlers.models import StateList, TaskRunBatch, TaskRunList, TaskRunQuery

__all__ = ["TaskRunBatchHandler", "TaskRunStatesHandler", "TaskRunsHandler"]


class TaskRunBatchHandler(NbflowHandler):
    """``/task_runs/batch``."""

    @endpoint(
        "write",
        "Upsert task-run snapshots and append task-run states in one batch",
        body=TaskRunBatch,
        status=204,
    )
    async def post(self) -> None:
        batch = self.parse_body(TaskRunBatch)
        if self.run_scope is not None:
            await self._check_run_token_batch(batch)
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

    async def _check_run_token_batch(self, batch: TaskRunBatch) -> None:
        """Refuse a batch touching anything but the token's run's task runs (never a move).

        The owner of every id is checked in the store, not only the ``flow_run_id`` the
        body claims: relabelling another run's task run would otherwise move it.
        """
        for task_run in batch.task_runs:
            self.require_run_scope(task_run.flow_run_id)
        in_batch = {t.id for t in batch.task_runs}
        state_ids = {s.task_run_id for s in batch.states}
        stored = await self.require_own_task_runs(in_batch | state_ids)
        for task_run_id in sorted(state_ids - in_batch - stored, key=str):
            raise ApiError(
                403,
                f"task run {task_run_id} is not a task run of this run token's flow run "
                f"{self.run_scope}; send its snapshot in the same batch",
            )


class TaskRunsHandler(NbflowHandler):
    """``/task_runs``."""

    @endpoint(
        "read",
        "Filter task runs by flow run and state type, oldest first",
        query=TaskRunQuery,
        response=TaskRunList,
    )
    async def get(self) -> None:
        query = self.parse_query(TaskRunQuery)
        if self.run_scope is not None and query.flow_run_ids != [self.run_scope]:
            if query.flow_run_ids is None or len(query.flow_run_ids) != 1:
                self.require_run_scope(None)
            else:
                await self.require_child_run(query.flow_run_ids[0])
        flt = TaskRunFilter(**query.model_dump())
        self.write_model(TaskRunList(items=await self.call(self.client.read_task_runs, flt)))


class TaskRunStatesHandler(NbflowHandler):
    """``/task_runs/{task_run_id}/states``."""

    @endpoint(
        "read",
        "A task run's state history, oldest first",
        response=StateList,
    )
    async def get(self, task_run_id: str) -> None:
        tid = self.parse_uuid("task_run_id", task_run_id)
        if self.run_scope is not None and not await self.require_own_task_runs([tid]):
            self.require_run_scope(None)  # not stored: not its run's either
        self.write_model(StateList(items=await self.call(self.client.read_task_run_states, tid)))
