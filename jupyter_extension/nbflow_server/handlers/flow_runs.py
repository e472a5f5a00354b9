"""``/flow_runs``: create, filter, read, orchestrate, cancel, heartbeat, output and graph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

from nbflow.exceptions import NotFound, TransitionRejected
from nbflow.schemas import (
    FlowRun,
    FlowRunCreate,
    FlowRunFilter,
    OrchestrationResult,
    SetStateStatus,
    TaskRunFilter,
)
from nbflow.settings import get_settings
from nbflow.states import Cancelled, Cancelling, StateType
from nbflow_server.handlers.base import (
    NbflowHandler,
    RunAccess,
    endpoint,
    flow_run_event,
)
from nbflow_server.handlers.models import (
    FlowRunGraph,
    FlowRunPage,
    FlowRunUpdate,
    GraphEdge,
    RunToken,
    SetStateRequest,
    StateList,
)
from nbflow_server.parameters import check_parameters
from nbflow_server.paths import confine_path

__all__ = [
    "FlowRunCancelHandler",
    "FlowRunGraphHandler",
    "FlowRunHandler",
    "FlowRunHeartbeatHandler",
    "FlowRunOutputHandler",
    "FlowRunSetStateHandler",
    "FlowRunStatesHandler",
    "FlowRunsHandler",
]

#: States in which nothing has been launched yet, so cancelling is immediate.
_NOT_STARTED = {StateType.SCHEDULED, StateType.PAUSED}


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
        if create.notebook_path is not None:
            path = confine_path(
                self.serverapp.root_dir, create.notebook_path, field="body.notebook_path"
            )
            create = create.model_copy(update={"notebook_path": path})
        flow = await self.call(self.client.read_flow, create.flow_id)
        check_parameters(
            flow.parameters_schema, create.parameters, field="body.parameters", flow_name=flow.name
        )
        if create.mode == "batch" and create.runner is None:
            runner = self.nbflow.default_runner
            job_variables = {**self.nbflow.runner_defaults.get(runner, {}), **create.job_variables}
            create = create.model_copy(update={"runner": runner, "job_variables": job_variables})
        run = await self.call(self.client.create_flow_run, create)
        if run.state is not None:
            self.publish(flow_run_event(run))
        self.write_model(run, status=201)


class FlowRunHandler(NbflowHandler):
    """``/flow_runs/{flow_run_id}``."""

    @endpoint("read", "Read a flow run", response=FlowRun, run_access=RunAccess.PATH)
    async def get(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        self.write_model(await self.call(self.client.read_flow_run, rid))

    @endpoint(
        "write",
        "Set non-state fields: name, tags, job variables, infrastructure id, output path",
        body=FlowRunUpdate,
        response=FlowRun,
        run_access=RunAccess.PATH,
    )
    async def patch(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        update = self.parse_body(FlowRunUpdate)
        changes = self.changes_of(update, nullable={"infrastructure_id", "output_path"})
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
        run_access=RunAccess.PATH,
    )
    async def post(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        request = self.parse_body(SetStateRequest)
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
        "Cancel a flow run: Cancelled if it has not started, else Cancelling (the runner stops it)",
        response=OrchestrationResult,
    )
    async def post(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        run = await self.call(self.client.read_flow_run, rid)
        current = run.state
        not_started = current is None or current.type in _NOT_STARTED
        proposed = Cancelled(message="cancelled before it started") if not_started else Cancelling()
        result = await self.call(self.client.set_flow_run_state, rid, proposed)
        if result.status is not SetStateStatus.ACCEPT:
            raise TransitionRejected(
                rid,
                proposed.name,
                current.name if current else None,
                result.reason or f"the gate answered {result.status}",
            )
        self.publish(flow_run_event(await self.call(self.client.read_flow_run, rid)))
        self.write_model(result)


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
        run_access=RunAccess.PATH,
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
        run_access=RunAccess.PATH,
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
        run_access=RunAccess.PATH,
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


class FlowRunOutputHandler(NbflowHandler):
    """``/flow_runs/{flow_run_id}/output``."""

    @endpoint(
        "read",
        "The run's output notebook (nbformat JSON)",
        run_access=RunAccess.PATH,
        raw_response="application/x-ipynb+json",
    )
    async def get(self, flow_run_id: str) -> None:
        rid = self.parse_uuid("flow_run_id", flow_run_id)
        notebook = await self.call(self._output_notebook, rid)
        self.set_header("Content-Type", "application/x-ipynb+json")
        self.finish(json.dumps(notebook))

    def _allowed_dirs(self) -> list[Path]:
        settings = get_settings()
        # The server root, where `nbflow execute` writes outputs, and the local results.
        dirs = [Path(self.serverapp.root_dir).resolve(), (settings.home / "outputs").resolve()]
        results = settings.results_url
        if "://" not in results or results.startswith("file://"):
            dirs.append(Path(results.removeprefix("file://")).resolve())
        return dirs

    def _read_local(self, location: str) -> dict[str, Any] | None:
        path = Path(location.removeprefix("file://"))
        if not path.is_absolute():
            path = Path(confine_path(self.serverapp.root_dir, location, field="output_path"))
            path = Path(self.serverapp.root_dir) / path
        path = path.resolve()
        if not any(path == d or d in path.parents for d in self._allowed_dirs()):
            self.log.warning("nbflow: output %s is outside the served directories", path)
            return None
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]

    def _output_notebook(self, flow_run_id: UUID) -> dict[str, Any]:
        run = self.client.read_flow_run(flow_run_id)
        artifacts = [
            a for a in self.client.read_artifacts(flow_run_id=flow_run_id) if a.kind == "notebook"
        ]
        for artifact in reversed(artifacts):
            if artifact.data is not None and "cells" in artifact.data:
                return artifact.data  # the notebook itself (a run in a container sends it)
            if artifact.uri and "://" not in artifact.uri.removeprefix("file://"):
                notebook = self._read_local(artifact.uri)
                if notebook is not None:
                    return notebook
        if run.output_path:
            notebook = self._read_local(run.output_path)
            if notebook is not None:
                return notebook
        raise NotFound("output notebook of flow run", flow_run_id)
