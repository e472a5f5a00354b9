"""``/artifacts``: store and list results and files of runs (output notebooks, reports).

From a run token an artifact belongs to its run, and a ``uri`` must name the run's own
output notebook (:func:`nbflow_server.capabilities.is_own_output`): the output endpoint
serves the file an artifact names, so a token must not point it at another run's file.
"""

from __future__ import annotations

from nbflow.schemas import Artifact
from nbflow_server.capabilities import is_own_output, outside_output_reason
from nbflow_server.handlers.base import ApiError, NbflowHandler, endpoint
from nbflow_server.handlers.models import ArtifactList, ArtifactQuery

__all__ = ["ArtifactsHandler"]


class ArtifactsHandler(NbflowHandler):
    """``/artifacts``."""

    @endpoint(
        "read",
        "Artifacts of a run and/or with a key, oldest first",
        query=ArtifactQuery,
        response=ArtifactList,
    )
    async def get(self) -> None:
        query = self.parse_query(ArtifactQuery)
        if self.run_scope is not None:
            self.require_run_scope(query.flow_run_id)
        items = await self.call(
            self.client.read_artifacts, flow_run_id=query.flow_run_id, key=query.key
        )
        self.write_model(ArtifactList(items=items))

    @endpoint(
        "write",
        "Store an artifact of a run",
        body=Artifact,
        response=Artifact,
        status=201,
    )
    async def post(self) -> None:
        artifact = self.parse_body(Artifact)
        if self.token_run is not None:
            self.require_run_scope(artifact.flow_run_id)
            await self.require_own_task_runs([artifact.task_run_id])
            if artifact.uri is not None and not is_own_output(self.token_run, artifact.uri):
                why = outside_output_reason(self.token_run, "body.uri", artifact.uri)
                raise ApiError(403, why, [{"field": "body.uri", "problem": why}])
        self.write_model(await self.call(self.client.create_artifact, artifact), status=201)
