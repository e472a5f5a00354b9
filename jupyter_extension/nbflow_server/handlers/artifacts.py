"""``/artifacts``: store and list results and files of runs (output notebooks, reports)."""

from __future__ import annotations

from nbflow.schemas import Artifact
from nbflow_server.handlers.base import NbflowHandler, RunAccess, endpoint
from nbflow_server.handlers.models import ArtifactList, ArtifactQuery

__all__ = ["ArtifactsHandler"]


class ArtifactsHandler(NbflowHandler):
    """``/artifacts``."""

    @endpoint(
        "read",
        "Artifacts of a run and/or with a key, oldest first",
        query=ArtifactQuery,
        response=ArtifactList,
        run_access=RunAccess.CHECKED,
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
        run_access=RunAccess.CHECKED,
    )
    async def post(self) -> None:
        artifact = self.parse_body(Artifact)
        self.require_run_scope(artifact.flow_run_id)
        self.write_model(await self.call(self.client.create_artifact, artifact), status=201)
