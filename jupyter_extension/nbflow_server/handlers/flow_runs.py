"""``/flow_runs``: create, filter, read, orchestrate, cancel, heartbeat, output and graph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

from nbflow.exceptions import NbflowError, NotFound, ValidationError
from nbflow.orchestration.diff import RunDiff, diff_runs, load_run
from nbflow.schemas import (
    FlowRun,
    FlowRunCreate,
    FlowRunFilter,
    OrchestrationResult,
    SetStateStatus,
    TaskRunFilter,
)
from nbflow.settings import get_settings
from nbflow.states import StateType
from nbflow_server.capabilities import (
    check_proposal,
    check_update,
    is_own_output,
)
from nbflow_server.handlers.base import (
    ApiError,
    NbflowHandler,
    endpoint,
    flow_run_event,
)
from nbflow_server.handlers.models import (
    CancelRequest,
    FlowRunGraph,
    FlowRunPage,
    FlowRunUpdate,
    GraphEdge,
    RetryRequest,
    RunToken,
    SetStateRequest,
    StateList,
    _Body,
)
from nbflow_server.paths import confine_path

__all__ = [
    "FlowRunCancelHandler",
    "FlowRunDiffHandler",
    "FlowRunGraphHandler",
    "FlowRunHandler",
    "FlowRunHeartbeatHandler",
    "FlowRunOutputHandler",
    "FlowRunRetryHandler",
    "FlowRunSetStateHandler",
    "FlowRunStatesHandler",
    "FlowRunsHandler",
]


class FlowRunsHandler(NbflowHandler):
    """``/flow_runs``."""

    @endpoint(
        "read",
        "Filter flow runs by state, flow, deployment and expected start; paginated with a total",
        query=FlowRunFilter,
        response=FlowRunPage,
    )
    async def get(self) -> None:
        flt = self.parse_query(FlowRunFilter)
        items = await self.call(self.client.read_flow_runs, flt)
        total = await self.call(self.client.count_flow_runs, flt)
        self.write_model(FlowRunPage(items=items, total=total, limit=flt.limit, offset=flt.offset))

    @endpoint(
        "execute", "Create an ad-hoc flow run", body=FlowRunCreate, response=FlowRun, status=201
    )
    async def post(self) -> None:
        create = self.parse_body(FlowRunCreate)
        # A run created already claimed (Pending) is executed by its creator (`nbflow run`
        # on the user's machine), never by this server: its path is the creator's own.
        self_claimed = create.state is not None and create.state.type is StateType.PENDING
        if create.notebook_path is not None and not self_claimed:
            path = confine_path(
                self.serverapp.root_dir, create.notebook_path, field="body.notebook_path"
            )
            create = create.model_copy(update={"notebook_path": path})
        # The lifecycle validates the parameters (400 naming body.parameters.<name>) and
        # picks the default runner; the run keeps its own job variables (merged at claim).
        run = await self.call(
            self.nbflow.lifecycle.create_flow_run, create, field="body.parameters"
        )
        if run.state is not None:
            self.publish(flow_run_event(run))
        self.write_model(run, status=201)


class FlowRunHandler(NbflowHandler):
    """``/flow_runs/{flow_run_id}``."""

    @endpoint("read", "Read a flow run", response=FlowRun)
    async def get(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        self.write_model(await self.call(self.client.read_flow_run, rid))

    @endpoint(
        "write",
        "Set non-state fields: name, tags, job variables, infrastructure id, output path",
        body=FlowRunUpdate,
        response=FlowRun,
    )
    async def patch(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        update = self.parse_body(FlowRunUpdate)
        changes = self.changes_of(update, nullable={"infrastructure_id", "output_path"})
        if self.token_run is not None:
            refused = check_update(self.token_run, changes)
            if refused is not None:
                field, why = refused
                raise ApiError(403, why, [{"field": field, "problem": why}])
        self.write_model(await self.call(self.client.update_flow_run, rid, **changes))

    @endpoint("write", "Delete a flow run with its task runs, logs and artifacts", status=204)
    async def delete(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        await self.call(self.client.delete_flow_run, rid)
        self.write_empty()


class FlowRunSetStateHandler(NbflowHandler):
    """``/flow_runs/{flow_run_id}/set_state``."""

    @endpoint(
        "write",
        "Propose a state through the orchestration gate; answers ACCEPT/REJECT/WAIT/ABORT",
        body=SetStateRequest,
        response=OrchestrationResult,
    )
    async def post(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        request = self.parse_body(SetStateRequest)
        if self.token_run is not None:
            why = check_proposal(self.token_run, request.state, force=request.force)
            if why is not None:
                raise ApiError(403, why, [{"field": "body.state", "problem": why}])
        result = await self.call(
            self.client.set_flow_run_state, rid, request.state, force=request.force
        )
        if result.status is SetStateStatus.ACCEPT:
            self.publish(flow_run_event(await self.call(self.client.read_flow_run, rid)))
        self.write_model(result)


class FlowRunCancelHandler(NbflowHandler):
    """``/flow_runs/{flow_run_id}/cancel``."""

    @endpoint(
        "execute",
        "Cancel a flow run: Cancelled if it has not started, else Cancelling (its owner stops "
        "it); 409 for a finished run",
        body=CancelRequest,
        response=OrchestrationResult,
    )
    async def post(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        request = self.parse_body(CancelRequest)
        if self.run_scope is not None and rid == self.run_scope:
            raise ApiError(
                403,
                "a run token cancels only its child runs; its own run is cancelled by the "
                "user (or ends itself through set_state)",
            )
        result = await self.call(self.client.cancel_flow_run, rid, message=request.message)
        self.publish(flow_run_event(await self.call(self.client.read_flow_run, rid)))
        self.write_model(result)


class FlowRunRetryHandler(NbflowHandler):
    """``/flow_runs/{flow_run_id}/retry``."""

    @endpoint(
        "execute",
        "Retry a finished batch run: a new Scheduled run with retry_of set, the same "
        "configuration and the same parameters unless given; 409 for an unfinished run. "
        "from_failed: a repair that restores the task cells the run completed and executes "
        "from its failed cell (400 for a Completed run)",
        body=RetryRequest,
        response=FlowRun,
        status=201,
    )
    async def post(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        request = self.parse_body(RetryRequest)
        run = await self.call(
            self.nbflow.lifecycle.retry_flow_run,
            rid,
            parameters=request.parameters,
            from_failed=request.from_failed,
            field="body.parameters",
        )
        self.publish(flow_run_event(run))
        self.nbflow.wake_dispatcher()
        self.write_model(run, status=201)


class FlowRunTokenHandler(NbflowHandler):
    """``/flow_runs/{flow_run_id}/token``: a per-run token for a worker's runner."""

    @endpoint(
        "execute",
        "Mint a token that lets a run's process report on this run and nothing else",
        response=RunToken,
    )
    async def post(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        await self.call(self.client.read_flow_run, rid)  # 404 for an unknown run
        self.write_model(RunToken(flow_run_id=rid, token=self.nbflow.mint_run_token(rid)))


class FlowRunHeartbeatHandler(NbflowHandler):
    """``/flow_runs/{flow_run_id}/heartbeat``."""

    @endpoint(
        "write",
        "Record that the process executing the run is alive",
        status=204,
    )
    async def post(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        await self.call(self.client.heartbeat, rid)
        self.write_empty()


class FlowRunStatesHandler(NbflowHandler):
    """``/flow_runs/{flow_run_id}/states``."""

    @endpoint(
        "read",
        "The run's state history, oldest first",
        response=StateList,
    )
    async def get(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        self.write_model(StateList(items=await self.call(self.client.read_flow_run_states, rid)))


class FlowRunGraphHandler(NbflowHandler):
    """``/flow_runs/{flow_run_id}/graph``."""

    @endpoint(
        "read",
        "The run's task runs and their upstream edges",
        response=FlowRunGraph,
    )
    async def get(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        await self.call(self.client.read_flow_run, rid)
        nodes = await self.call(
            self.client.read_task_runs, TaskRunFilter(flow_run_ids=[rid], limit=100_000)
        )
        known = {n.id for n in nodes}
        edges = [
            GraphEdge(upstream=up, downstream=n.id)
            for n in nodes
            for up in n.upstream
            if up in known
        ]
        self.write_model(FlowRunGraph(flow_run_id=rid, nodes=nodes, edges=edges))


class _OutputNotebooks(NbflowHandler):
    """Finds a run's output notebook: the newest notebook artifact's ``data``, else the
    run's own output file -- one named ``<run id>.ipynb`` or the run's ``output_path``,
    under the server root or the local outputs/results directories -- never a file another
    run's artifact names.
    """

    def _allowed_dirs(self) -> list[Path]:
        settings = get_settings()
        # The server root, where `nbflow execute` writes outputs, and the local results.
        dirs = [Path(self.serverapp.root_dir).resolve(), (settings.home / "outputs").resolve()]
        results = settings.results_url
        if "://" not in results or results.startswith("file://"):
            dirs.append(Path(results.removeprefix("file://")).resolve())
        return dirs

    def _read_local(self, location: str) -> dict[str, Any] | None:
        """Read a notebook file under the served directories; None if it is not one."""
        path = Path(location.removeprefix("file://"))
        if not path.is_absolute():
            try:
                relative = confine_path(self.serverapp.root_dir, str(path), field="output_path")
            except ValidationError:
                self.log.warning("nbflow: output %s is outside the server root", location)
                return None
            path = Path(self.serverapp.root_dir) / relative
        path = path.resolve()
        if not any(path == d or d in path.parents for d in self._allowed_dirs()):
            self.log.warning("nbflow: output %s is outside the served directories", path)
            return None
        if not path.is_file():
            return None
        try:
            notebook = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.log.warning("nbflow: output %s is not a readable notebook", path)
            return None
        return notebook if isinstance(notebook, dict) else None

    def _output_notebook(self, flow_run_id: UUID) -> dict[str, Any]:
        run = self.client.read_flow_run(flow_run_id)
        artifacts = [
            a for a in self.client.read_artifacts(flow_run_id=flow_run_id) if a.kind == "notebook"
        ]
        for artifact in reversed(artifacts):
            if artifact.data is not None and "cells" in artifact.data:
                return artifact.data  # the notebook itself (a run in a container sends it)
            # Only the run's own output file: never one another run's artifact points at.
            if artifact.uri and is_own_output(run, artifact.uri):
                notebook = self._read_local(artifact.uri)
                if notebook is not None:
                    return notebook
            elif artifact.uri:
                self.log.warning(
                    "nbflow: artifact %s of flow run %s names %s, not the run's own output",
                    artifact.id,
                    flow_run_id,
                    artifact.uri,
                )
        if run.output_path:
            notebook = self._read_local(run.output_path)
            if notebook is not None:
                return notebook
        raise NotFound("output notebook of flow run", flow_run_id)


class FlowRunOutputHandler(_OutputNotebooks):
    """``/flow_runs/{flow_run_id}/output``."""

    @endpoint(
        "read",
        "The run's output notebook (nbformat JSON)",
        raw_response="application/x-ipynb+json",
    )
    async def get(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        notebook = await self.call(self._output_notebook, rid)
        self.set_header("Content-Type", "application/x-ipynb+json")
        self.finish(json.dumps(notebook))


class DiffQuery(_Body):
    """The run to compare with (B)."""

    other: UUID


class FlowRunDiffHandler(_OutputNotebooks):
    """``/flow_runs/{flow_run_id}/diff?other={id}``: the run compared with another one.

    The comparison is :func:`nbflow.orchestration.diff.diff_runs`, as ``nbflow runs diff``;
    a run without an output notebook is compared all the same (``outputs_note`` says so).
    """

    @endpoint(
        "read",
        "Compare the run (A) with another (B): parameters, states, durations, task runs and "
        "cell outputs; deltas are B - A",
        query=DiffQuery,
        response=RunDiff,
    )
    async def get(self, flow_run_id: str) -> None:
        a = self.parse_uuid("flow_run_id", flow_run_id)
        b = self.parse_query(DiffQuery).other
        self.write_model(await self.call(self._diff, a, b))

    def _diff(self, a: UUID, b: UUID) -> RunDiff:
        def read_notebook(run: FlowRun) -> dict[str, Any]:
            try:
                return self._output_notebook(run.id)
            except NotFound:
                raise NbflowError(f"flow run {run.id} has no output notebook stored") from None

        first = load_run(self.client, a, read_notebook)
        return diff_runs(first, load_run(self.client, b, read_notebook))
