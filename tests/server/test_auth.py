"""Who may call what: every route of the route table, each kind of caller.

The walk is generated from :data:`nbflow_server.handlers.ROUTES`: a route without a case
below fails :func:`test_every_route_answers_every_caller_as_documented`, so a new route
cannot skip it.  The expected answers are written here, not read from the capability
table, and docs/security.md must show the table the server enforces.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from tornado.httpclient import HTTPClientError

from nbflow.notifications import Automation
from nbflow.schemas import (
    Artifact,
    Deployment,
    DeploymentCreate,
    Flow,
    FlowRun,
    FlowRunCreate,
    Log,
    TaskRun,
)
from nbflow.states import Completed, Pending, Running, Scheduled, State
from nbflow_server import NbflowApp
from nbflow_server.capabilities import CAPABILITIES, endpoints_markdown, transitions_markdown
from nbflow_server.handlers import ROUTES
from nbflow_server.openapi import endpoints, openapi_path
from tests.server.helpers import API, Api, make_notebook

ROOT = Path(__file__).resolve().parents[2]


def _state(state: State) -> dict[str, Any]:
    return json.loads(state.model_dump_json())


@dataclass
class Target:
    """The objects one request is about: a run, its flow, deployment and task run."""

    run: FlowRun
    task_run_id: UUID
    automation_id: UUID | None = None

    def ids(self) -> dict[str, str]:
        return {
            "automation_id": str(self.automation_id),
            "flow_run_id": str(self.run.id),
            "flow_id": str(self.run.flow_id),
            "deployment_id": str(self.run.deployment_id),
            "task_run_id": str(self.task_run_id),
            "key": "tag:walk",
            "version": "1",
        }


#: Builds the JSON body (or query) of a request about a target.
Build = Callable[[Target], Any]


@dataclass(frozen=True)
class Case:
    """One endpoint: a valid request, which run it is about, and whether a run token may."""

    method: str
    path: str
    run_token: bool
    body: Build | None = None
    query: Build | None = None
    #: Which fixture run the request is about (the own-run token is that run's token).
    target: str = "live"
    #: Whose token is the allowed one, when not the target's (a parent's, for its child).
    token_of: str | None = None


def _notebook_body(t: Target) -> dict[str, Any]:
    return {
        "flow_id": str(t.run.flow_id),
        "name": f"d-{uuid4().hex[:6]}",
        "notebook": make_notebook(),
    }


CASES: list[Case] = [
    Case("get", "/flows", False),
    Case("post", "/flows", False, body=lambda t: {"name": f"walk-{uuid4().hex[:6]}"}),
    Case("get", "/flows/{flow_id}", True),
    Case("get", "/deployments", False),
    Case("post", "/deployments", False, body=_notebook_body),
    Case("get", "/deployments/{deployment_id}", True),
    Case("patch", "/deployments/{deployment_id}", False, body=lambda t: {"description": "w"}),
    Case("delete", "/deployments/{deployment_id}", False, target="spare"),
    Case("post", "/deployments/{deployment_id}/runs", False, body=lambda t: {}),
    Case("post", "/deployments/{deployment_id}/changes", False, body=lambda t: {"paused": True}),
    Case("get", "/deployments/{deployment_id}/versions", False),
    Case("get", "/deployments/{deployment_id}/versions/{version}", False),
    Case("get", "/deployments/{deployment_id}/versions/{version}/diff", False),
    Case("get", "/run_environments", False),
    Case("get", "/flow_runs", False),
    Case("post", "/flow_runs/prune", False, body=lambda t: {"older_than_seconds": 1e9}),
    Case("post", "/flow_runs", False, body=lambda t: {"flow_id": str(t.run.flow_id)}),
    Case(
        "post",
        "/flow_runs/claim",
        False,
        body=lambda t: {"runners": ["walk-no-such-runner"], "claimer": "walk"},
    ),
    Case("get", "/flow_runs/{flow_run_id}", True),
    Case(
        "patch",
        "/flow_runs/{flow_run_id}",
        True,
        body=lambda t: {"output_path": f"/tmp/walk/{t.run.id}.ipynb"},
    ),
    Case("delete", "/flow_runs/{flow_run_id}", False, target="doomed"),
    Case(
        "post",
        "/flow_runs/{flow_run_id}/set_state",
        True,
        body=lambda t: {"state": _state(Running())},
        target="pending",
    ),
    # a run token cancels its child runs only (its own run: 403, tested apart)
    Case("post", "/flow_runs/{flow_run_id}/cancel", True, target="cancel_me", token_of="live"),
    Case("post", "/flow_runs/{flow_run_id}/retry", False, body=lambda t: {}, target="ended"),
    Case(
        "post",
        "/flow_runs/{flow_run_id}/children",
        True,
        body=lambda t: {
            "notebook": make_notebook(["%%flow walk_child\nx = 1"]),
            "notebook_path": "/tmp/walk/child.ipynb",
        },
    ),
    Case("post", "/flow_runs/{flow_run_id}/heartbeat", True),
    Case("post", "/flow_runs/{flow_run_id}/token", False),
    Case("get", "/flow_runs/{flow_run_id}/states", True),
    Case("get", "/flow_runs/{flow_run_id}/output", True),
    Case("get", "/flow_runs/{flow_run_id}/graph", True),
    Case("get", "/flow_runs/{flow_run_id}/diff", False, query=lambda t: {"other": str(t.run.id)}),
    Case("get", "/task_runs", True, query=lambda t: {"flow_run_ids": str(t.run.id)}),
    Case(
        "post",
        "/task_runs/batch",
        True,
        body=lambda t: {
            "task_runs": [
                {
                    "id": str(t.task_run_id),
                    "flow_run_id": str(t.run.id),
                    "name": "t",
                    "task_key": "t",
                }
            ]
        },
    ),
    Case("get", "/task_runs/{task_run_id}/states", True),
    Case("get", "/logs", True, query=lambda t: {"flow_run_id": str(t.run.id)}),
    Case(
        "post",
        "/logs/batch",
        True,
        body=lambda t: {"logs": [{"flow_run_id": str(t.run.id), "message": "walk"}]},
    ),
    Case("get", "/artifacts", True, query=lambda t: {"flow_run_id": str(t.run.id)}),
    Case(
        "post",
        "/artifacts",
        True,
        body=lambda t: {"flow_run_id": str(t.run.id), "key": "walk", "data": {"a": 1}},
    ),
    Case("get", "/concurrency_limits", False),
    Case("put", "/concurrency_limits/{key}", False, body=lambda t: {"limit": 3}),
    Case("delete", "/concurrency_limits/{key}", False),
    Case("get", "/automations", False),
    Case(
        "post",
        "/automations",
        False,
        body=lambda t: {
            "action": "webhook",
            "webhook_url": "https://x.test/h",
            "on_states": ["FAILED"],
        },
    ),
    Case("get", "/automations/{automation_id}", False),
    Case("get", "/automations/{automation_id}/deliveries", False),
    Case("get", "/notification_deliveries", False),
    Case("patch", "/automations/{automation_id}", False, body=lambda t: {"enabled": True}),
    Case("delete", "/automations/{automation_id}", False),
    Case("get", "/events", False),
    Case("get", "/openapi.json", False),
    Case("get", "/schedules/preview", False, query=lambda t: {"cron": "0 * * * *"}),
    Case("get", "/schedules/upcoming", False),
    Case("get", "/notebook_parameters", False, query=lambda t: {"path": "walk.ipynb"}),
]


@dataclass
class World:
    """The objects of the walk, created once through the store."""

    app: NbflowApp
    targets: dict[str, Target] = field(default_factory=dict)

    def token(self, name: str) -> dict[str, str]:
        return {"Authorization": f"token {self.app.mint_run_token(self.targets[name].run.id)}"}


def _build_world(app: NbflowApp, root: Path) -> World:
    client = app.client
    flow = client.create_flow(Flow(name="walk"))
    (root / "walk.ipynb").write_text(json.dumps(make_notebook(["%%flow walk\nx = 1"])))
    deployment = client.create_deployment(
        DeploymentCreate(flow_id=flow.id, name="walk", notebook=make_notebook())
    )
    spare = client.create_deployment(
        DeploymentCreate(flow_id=flow.id, name="spare", notebook=make_notebook())
    )
    # The other run is of another flow and deployment: a token reads its own run's only.
    elsewhere = client.create_flow(Flow(name="walk-elsewhere"))
    theirs = client.create_deployment(
        DeploymentCreate(flow_id=elsewhere.id, name="theirs", notebook=make_notebook())
    )
    world = World(app)
    rule = app.automations.create(
        Automation.model_validate(
            {"action": "webhook", "webhook_url": "https://x.test/h", "on_states": ["FAILED"]}
        )
    )

    def run(
        name: str, *states: State, deployment: Deployment = deployment, parent: str | None = None
    ) -> None:
        created = client.create_flow_run(
            FlowRunCreate(
                flow_id=deployment.flow_id,
                deployment_id=deployment.id,
                state=Scheduled(),
                runner="walk",
                mode="batch",
                parent_flow_run_id=world.targets[parent].run.id if parent else None,
            )
        )
        for state in states:
            client.set_flow_run_state(created.id, state, force=True)
        task_run = TaskRun(flow_run_id=created.id, name="t", task_key="t", state=Running())
        client.write_task_runs([task_run], [(task_run.id, Running())])
        client.write_logs([Log(flow_run_id=created.id, message="hello")])
        client.create_artifact(
            Artifact(
                flow_run_id=created.id, key="output-notebook", kind="notebook", data=make_notebook()
            )
        )
        world.targets[name] = Target(client.read_flow_run(created.id), task_run.id, rule.id)

    run("live", Pending(), Running())
    run("other", Pending(), Running(), deployment=theirs)
    run("ended", Pending(), Running(), Completed())
    run("pending", Pending())
    run("doomed", Pending(), Running())
    run("cancel_me", Pending(), Running(), parent="live")
    run("spare", deployment=spare)
    return world


def _path(case: Case, target: Target) -> list[str]:
    return case.path.format(**target.ids()).strip("/").split("/")


async def _call(
    api: Api, jp_ws_fetch: Any, case: Case, target: Target, headers: dict[str, str]
) -> int:
    """Send the case's request about ``target``; return the status (websocket: 101)."""
    if case.path == "/events":
        try:
            socket = await jp_ws_fetch(*API, "events", headers=headers)
        except HTTPClientError as exc:
            return exc.code
        socket.close()
        return 101
    body = case.body(target) if case.body else None
    params = case.query(target) if case.query else None
    status, _ = await api(
        case.method.upper(), *_path(case, target), body=body, params=params, headers=headers
    )
    return status


async def test_every_route_answers_every_caller_as_documented(
    api: Api, jp_ws_fetch: Any, nbflow_app: NbflowApp, jp_root_dir: Path
) -> None:
    routes = {
        (method, path.removeprefix("/nbflow/api/v1")) for path, method, _ in endpoints(ROUTES)
    }
    cases = {(c.method, c.path) for c in CASES}
    assert routes - cases == set(), "routes without a case in this walk: add one"
    assert cases - routes == set(), "cases of routes that no longer exist"

    world = _build_world(nbflow_app, jp_root_dir)
    ended = world.targets["ended"]
    wrong: list[tuple[str, str, str, int]] = []

    def expect(case: Case, who: str, status: int, allowed: bool) -> None:
        ok = (200 <= status < 300 or status == 101) if allowed else status in (401, 403)
        if not ok:
            wrong.append((case.method, case.path, who, status))

    for case in CASES:
        target = world.targets[case.target]
        forged = f"token nbflow-run.{target.run.id}.{'0' * 64}"
        for who, headers, about, allowed in [
            ("anonymous", {"Authorization": ""}, target, False),
            ("wrong token", {"Authorization": "token wrong"}, target, False),
            ("forged run token", {"Authorization": forged}, target, False),
            ("other run's token", world.token("other"), target, False),
            ("expired run token", world.token("ended"), ended, False),
            ("own run's token", world.token(case.token_of or case.target), target, case.run_token),
            ("user", {}, target, True),
        ]:
            expect(case, who, await _call(api, jp_ws_fetch, case, about, headers), allowed)
    assert wrong == [], "(method, path, caller, status) answered against docs/security.md"


def test_the_capability_table_names_real_endpoints() -> None:
    # The table is keyed by ``Handler.method``: two handlers of one name would share a row.
    names = [route.handler.__name__ for route in ROUTES]
    assert len(names) == len(set(names))
    handlers = {
        f"{route.handler.__name__}.{method}": (method.upper(), openapi_path(route.path))
        for route in ROUTES
        for method in ("get", "post", "put", "patch", "delete")
        if hasattr(route.handler, method)
    }
    for capability in CAPABILITIES:
        method, path = handlers[capability.endpoint]
        assert capability.operation == f"{method} {path.removeprefix('/nbflow/api/v1')}"
    run_token_cases = {f"{c.method.upper()} {c.path}" for c in CASES if c.run_token}
    assert {c.operation for c in CAPABILITIES} == run_token_cases


def test_docs_show_the_capability_table_the_server_enforces() -> None:
    docs = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    assert endpoints_markdown() in docs, "paste capabilities.endpoints_markdown() in the docs"
    assert transitions_markdown() in docs, "paste capabilities.transitions_markdown() in the docs"


async def test_a_wrong_jupyter_token_is_refused(api: Api) -> None:
    status, _ = await api("GET", "flow_runs", headers={"Authorization": "token wrong"})
    assert status == 403
    status, body = await api(
        "GET", "flow_runs", headers={"Authorization": f"token nbflow-run.{uuid4()}.deadbeef"}
    )
    assert status == 403
    assert "run token" in body["message"]


async def test_run_token_reads_only_its_own_deployment(
    api: Api, nbflow_app: NbflowApp, jp_root_dir: Path
) -> None:
    client = nbflow_app.client
    flow = client.create_flow(Flow(name="deployed"))
    status, dep = await api(
        "POST",
        "deployments",
        body={"flow_id": str(flow.id), "name": "d", "notebook": make_notebook()},
    )
    assert status == 201, dep
    status, dep2 = await api(
        "POST",
        "deployments",
        body={"flow_id": str(flow.id), "name": "d2", "notebook": make_notebook()},
    )
    status, run = await api("POST", "deployments", dep["id"], "runs", body={})
    assert status == 201
    auth = {"Authorization": f"token {nbflow_app.mint_run_token(run['id'])}"}
    status, got = await api("GET", "deployments", dep["id"], headers=auth)
    assert status == 200 and "".join(got["notebook"]["cells"][0]["source"]) == "x = 1"
    assert (await api("GET", "deployments", dep2["id"], headers=auth))[0] == 403


async def test_run_token_reaches_no_other_run(api: Api, nbflow_app: NbflowApp) -> None:
    """Ids of another run in bodies and queries, not only in paths, are refused."""
    client = nbflow_app.client
    flow = client.create_flow(Flow(name="tokens"))
    mine, other = (
        client.create_flow_run(FlowRunCreate(flow_id=flow.id, state=Running())) for _ in range(2)
    )
    auth = {"Authorization": f"token {nbflow_app.mint_run_token(mine.id)}"}
    o = str(other.id)
    task_run = {"id": str(uuid4()), "flow_run_id": o, "name": "t", "task_key": "t"}
    refused = [
        await api("POST", "task_runs", "batch", body={"task_runs": [task_run]}, headers=auth),
        await api(
            "POST",
            "task_runs",
            "batch",
            body={"states": [{"task_run_id": str(uuid4()), "state": _state(Running())}]},
            headers=auth,
        ),
        await api(
            "POST",
            "logs",
            "batch",
            body={"logs": [{"flow_run_id": o, "message": "x"}]},
            headers=auth,
        ),
        await api("GET", "logs", params={"flow_run_id": o}, headers=auth),
        await api("GET", "task_runs", params={"flow_run_ids": o}, headers=auth),
        await api("GET", "task_runs", headers=auth),
        await api("GET", "artifacts", params={"flow_run_id": o}, headers=auth),
        await api("GET", "artifacts", headers=auth),
        await api("POST", "artifacts", body={"flow_run_id": o, "key": "k"}, headers=auth),
        await api("GET", "flow_runs", "not-a-uuid", headers=auth),
    ]
    assert [s for s, _ in refused] == [403] * len(refused), refused
    assert (
        client.read_logs(other.id).logs == [] and client.read_artifacts(flow_run_id=other.id) == []
    )


@pytest.mark.parametrize("events_filter", [None, "flow_run_id"])
async def test_run_token_cannot_open_the_event_stream(
    jp_ws_fetch: Any, nbflow_app: NbflowApp, events_filter: str | None
) -> None:
    run_id = uuid4()
    token = nbflow_app.mint_run_token(run_id)
    params = {events_filter: str(run_id)} if events_filter else None
    with pytest.raises(HTTPClientError) as err:
        await jp_ws_fetch(
            *API, "events", headers={"Authorization": f"token {token}"}, params=params
        )
    assert err.value.code == 403
