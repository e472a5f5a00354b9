"""The HTTP client against a live server behaves like the embedded client.

One scenario runs through :class:`EmbeddedClient` (its own store) and through
:class:`HTTPClient` against the pytest-jupyter server; the normalized results must match.
The HTTP calls run in a worker thread so the server's event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import BaseModel

from nbflow.client.base import Client
from nbflow.client.embedded import EmbeddedClient
from nbflow.client.http import APIError, HTTPClient
from nbflow.exceptions import (
    FlowRunNotFound,
    NotFound,
    ObjectAlreadyExists,
    TransitionRejected,
    ValidationError,
)
from nbflow.schemas import (
    Artifact,
    DeploymentCreate,
    Flow,
    FlowRunCreate,
    FlowRunFilter,
    Log,
    Schedule,
    TaskRun,
    TaskRunFilter,
)
from nbflow.states import Completed, Pending, Running, Scheduled, StateType
from nbflow_server import NbflowApp
from tests.server.helpers import make_notebook

_TIME_KEYS = {
    "created",
    "updated",
    "timestamp",
    "heartbeat",
    "start_time",
    "end_time",
    "expected_start_time",
    "scheduled_time",
    "total_run_time",
}
NOTEBOOK = make_notebook()
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def normalize(value: Any, names: dict[str, str]) -> Any:
    """Replace ids by their order of appearance and drop clock readings."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: ("<t>" if k in _TIME_KEYS else normalize(v, names)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(v, names) for v in value]
    if isinstance(value, UUID):
        value = str(value)
    if isinstance(value, str) and _UUID.match(value):
        return names.setdefault(value, f"id{len(names)}")
    return value


def scenario(client: Client) -> list[Any]:
    """Exercise every Client method; return what each call answered."""
    out: list[Any] = []
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "x": {"type": "array"}}}
    flow = client.create_flow(Flow(name="sales", tags=["t"], parameters_schema=schema))
    out += [
        flow,
        client.create_flow(Flow(name="sales", description="v2", parameters_schema=schema)),
    ]
    out += [client.read_flow(flow.id), client.read_flow_by_name("sales"), client.read_flows()]
    dep = client.create_deployment(
        DeploymentCreate(
            flow_id=flow.id,
            name="prod",
            notebook=NOTEBOOK,
            parameters={"a": 1},
            schedules=[Schedule(interval_seconds=60)],
        )
    )
    out += [dep, client.read_deployment(dep.id), client.read_deployments(flow_id=flow.id)]
    out.append(
        client.update_deployment(dep.id, paused=True, schedules=[Schedule(cron="0 6 * * *")])
    )

    run = client.create_flow_run(
        FlowRunCreate(
            flow_id=flow.id,
            name="r1",
            deployment_id=dep.id,
            state=Scheduled(),
            idempotency_key="k1",
            mode="batch",
        )
    )
    out.append(run)
    out.append(
        client.create_flow_run(
            FlowRunCreate(flow_id=flow.id, deployment_id=dep.id, idempotency_key="k1")
        ).id
        == run.id
    )
    other = client.create_flow_run(
        FlowRunCreate(flow_id=flow.id, name="adhoc", parameters={"x": [1, 2]})
    )
    claim = Pending()
    out += [client.set_flow_run_state(run.id, claim), client.set_flow_run_state(run.id, claim)]
    out.append(client.set_flow_run_state(run.id, Pending()))
    out.append(client.set_flow_run_state(run.id, Running()))
    client.heartbeat(run.id)
    out.append(client.read_flow_run(run.id).heartbeat is not None)
    out.append(client.update_flow_run(run.id, infrastructure_id="pid-7", tags=["x"]))

    a, b = TaskRun(flow_run_id=run.id, name="a", task_key="a"), None
    b = TaskRun(flow_run_id=run.id, name="b", task_key="b", upstream=[a.id])
    client.write_task_runs([a, b], [(a.id, Running()), (a.id, Completed()), (b.id, Running())])
    out.append(client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id])))
    out.append(client.read_task_runs(TaskRunFilter(state_types=[StateType.COMPLETED])))
    out.append(client.read_task_run_states(a.id))

    client.write_logs(
        [Log(flow_run_id=run.id, message=f"m{i}") for i in range(4)]
        + [Log(flow_run_id=run.id, task_run_id=a.id, message="task")]
    )
    page = client.read_logs(run.id, limit=2)
    out.append((page.logs, client.read_logs(run.id, cursor=page.cursor).logs))
    out.append(client.read_logs(run.id, task_run_id=a.id).logs)
    out.append(
        client.create_artifact(
            Artifact(flow_run_id=run.id, key="nb", kind="notebook", data={"x": 1})
        )
    )
    out.append(client.read_artifacts(flow_run_id=run.id))
    out.append(client.read_artifacts(key="nb"))

    out.append(client.set_flow_run_state(run.id, Completed()))
    out.append(client.set_flow_run_state(run.id, Running()))
    out.append(client.read_flow_run_states(run.id))
    # the lifecycle's cancel and retry, the same through both clients
    out.append(client.cancel_flow_run(other.id, message="not needed"))
    try:
        client.cancel_flow_run(run.id)
    except TransitionRejected:
        out.append("TransitionRejected")
    out.append(client.retry_flow_run(run.id, parameters={"a": 2}))
    out.append(client.read_flow_runs())
    out.append(client.read_flow_runs(FlowRunFilter(state_types=[StateType.COMPLETED])))
    out.append(client.read_flow_runs(FlowRunFilter(deployment_ids=[dep.id], limit=1)))
    out.append(client.count_flow_runs(FlowRunFilter(flow_ids=[flow.id], limit=1)))

    for call in (
        lambda: client.read_flow_run(uuid4()),
        lambda: client.read_flow(uuid4()),
        lambda: client.read_flow_by_name("missing"),
        lambda: client.read_deployment(uuid4()),
        lambda: client.set_flow_run_state(uuid4(), Running()),
        lambda: client.set_flow_run_state(other.id, claim),
    ):
        try:
            call()
        except NotFound as exc:
            out.append(("NotFound", isinstance(exc, FlowRunNotFound)))
        except ObjectAlreadyExists:
            out.append("ObjectAlreadyExists")
    client.delete_flow_run(other.id)
    client.delete_deployment(dep.id)
    out.append(client.count_flow_runs())
    out.append(client.read_deployments())
    return out


@pytest.fixture
def http_client(jp_serverapp: Any, http_server_client: Any, jp_http_port: int) -> Any:
    token = jp_serverapp.identity_provider.token
    url = f"http://127.0.0.1:{jp_http_port}{jp_serverapp.base_url}nbflow/api/v1"
    client = HTTPClient(url, token=token)
    yield client
    client.close()


async def test_http_client_matches_embedded_client(
    http_client: HTTPClient, nbflow_app: NbflowApp, tmp_path: Path
) -> None:
    embedded = EmbeddedClient.from_url(f"sqlite:///{tmp_path / 'embedded.db'}")
    try:
        expected = normalize(scenario(embedded), {})
    finally:
        embedded.close()
    loop = asyncio.get_running_loop()
    got = normalize(await loop.run_in_executor(None, scenario, http_client), {})
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"step {i} differs"


def _errors(client: HTTPClient, run_token_client: HTTPClient) -> list[str]:
    seen = []
    try:
        client.create_flow(Flow.model_construct(name="", id=uuid4(), tags=[], parameters_schema={}))
    except ValidationError as exc:
        seen.append(f"400 {exc.field}")
    try:
        run_token_client.read_flow_runs()
    except APIError as exc:
        seen.append(f"{exc.status_code} {'NBFLOW_API_TOKEN' in str(exc)}")
    return seen


async def test_http_client_errors(http_client: HTTPClient, nbflow_app: NbflowApp) -> None:
    token = nbflow_app.mint_run_token(uuid4())
    run_client = HTTPClient(http_client.api_url, token=token)
    try:
        loop = asyncio.get_running_loop()
        seen = await loop.run_in_executor(None, _errors, http_client, run_client)
    finally:
        run_client.close()
    assert seen == ["400 body.name", "403 True"]


def test_unreachable_server_is_an_nbflow_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with HTTPClient(f"http://127.0.0.1:{port}/nbflow/api/v1", retries=0, retry_seconds=0) as client:
        with pytest.raises(APIError) as err:
            client.read_flows()
    assert err.value.status_code == 0 and "cannot reach" in str(err.value)


def test_http_client_needs_an_http_url() -> None:
    with pytest.raises(ValidationError, match="api_url"):
        HTTPClient("localhost:8888")
