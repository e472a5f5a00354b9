"""The dispatcher: claims due runs once, within concurrency limits, and submits them.

A :class:`RecordingRunner` is configured in place of the ``subprocess`` runner
(``NbflowApp.runner_classes``), so these tests see exactly what the dispatcher gives a
runner without starting processes; ``test_end_to_end.py`` runs real ones.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from nbflow.client.base import Client
from nbflow.client.embedded import EmbeddedClient
from nbflow.dispatch import Dispatcher, RunnerPool
from nbflow.orchestration.lifecycle import FlowRunLifecycle
from nbflow.orchestration.policy import evaluate
from nbflow.orchestration.store import Store
from nbflow.runners.subprocess import SubprocessRunner
from nbflow.schemas import (
    ClaimedRun,
    Flow,
    FlowRun,
    FlowRunCreate,
    FlowRunFilter,
    SetStateStatus,
)
from nbflow.states import (
    Cancelling,
    Completed,
    Pending,
    Running,
    Scheduled,
    StateType,
    Submitting,
    now,
)
from nbflow_server import NbflowApp
from tests.server.helpers import Api, make_notebook
from tests.server.live_services import (
    BACKENDS,
    RecordingRunner,
    database_url,
    eventually,
    services_config,
)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def limits() -> dict[str, Any]:
    return {}


@pytest.fixture
def jp_server_config(db_url: str, tmp_path: Path, limits: dict[str, Any]) -> dict[str, Any]:
    RecordingRunner.reset()
    return services_config(
        db_url,
        tmp_path,
        runner_classes={"subprocess": RecordingRunner},
        runner_defaults={"subprocess": {"env": {"A": "default", "B": "default"}}},
        **limits,
    )


async def start(jp_serverapp: Any, nbflow_app: NbflowApp) -> NbflowApp:
    """Start the services: what ServerApp.start() does once its loop runs (pytest-jupyter does not)."""
    await jp_serverapp.extension_manager.start_all_extensions()
    running = nbflow_app.services.running
    assert [name for name in running if name in ("monitors", "scheduler", "dispatcher")] == [
        "monitors",
        "scheduler",
        "dispatcher",
    ]
    return nbflow_app


async def _deployment(api: Api, name: str = "d", **fields: Any) -> dict[str, Any]:
    _, flow = await api("POST", "flows", body={"name": f"flow-{name}"})
    status, dep = await api(
        "POST",
        "deployments",
        body={"flow_id": flow["id"], "name": name, "notebook": make_notebook(), **fields},
    )
    assert status == 201, dep
    return dep  # type: ignore[no-any-return]


def _submitted_ids() -> list[str]:
    return [str(run.id) for run, _, _ in RecordingRunner.submissions]


async def test_due_runs_are_submitted_once_with_merged_job_variables(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    started = await start(jp_serverapp, nbflow_app)
    dep = await _deployment(api, job_variables={"env": {"B": "deployment", "C": "deployment"}})
    _, run = await api(
        "POST", "deployments", dep["id"], "runs", body={"job_variables": {"env": {"C": "run"}}}
    )

    async def submitted() -> Any:
        _, current = await api("GET", "flow_runs", run["id"])
        return current if current["infrastructure_id"] else None

    current = await eventually(submitted, what="the run to be submitted")
    assert current["state"]["type"] == "PENDING"
    assert current["state"]["name"] == "Submitting"
    assert current["infrastructure_id"].startswith("recording-")
    assert _submitted_ids() == [run["id"]]
    _, config, env = RecordingRunner.submissions[0]
    # runner defaults < deployment < run, env merged key by key
    assert config["env"] == {"A": "default", "B": "deployment", "C": "run"}
    assert env["NBFLOW_API_URL"] == started.api_url()
    assert started.signer.verify(env["NBFLOW_API_TOKEN"]) == UUID(run["id"])
    assert env["NBFLOW__FLOW_RUN_ID"] == run["id"]
    _, states = await api("GET", "flow_runs", run["id"], "states")
    assert [(s["type"], s["name"]) for s in states["items"]] == [
        ("SCHEDULED", "Scheduled"),
        ("PENDING", "Pending"),
        ("PENDING", "Submitting"),
    ]
    # Later passes never submit it again.
    assert started.dispatcher is not None
    await started.dispatcher.tick()
    assert _submitted_ids() == [run["id"]]


async def test_future_and_foreign_runs_are_left_alone(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    started = await start(jp_serverapp, nbflow_app)
    dep = await _deployment(api)
    later = (now() + timedelta(hours=1)).isoformat()
    _, future = await api("POST", "deployments", dep["id"], "runs", body={"scheduled_time": later})
    # An ad-hoc run of a runner this server does not dispatch (a worker's).
    _, foreign = await api(
        "POST",
        "flow_runs",
        body={
            "flow_id": dep["flow_id"],
            "mode": "batch",
            "runner": "docker",
            "state": {"type": "SCHEDULED", "name": "Scheduled"},
        },
    )
    _, marker = await api("POST", "deployments", dep["id"], "runs", body={})
    await eventually(
        lambda: asyncio.sleep(0, marker["id"] in _submitted_ids()), what="the due run's submission"
    )
    assert started.dispatcher is not None
    await started.dispatcher.tick()
    assert _submitted_ids() == [marker["id"]]
    for run in (future, foreign):
        _, current = await api("GET", "flow_runs", run["id"])
        assert current["state"]["type"] == "SCHEDULED"


async def test_failed_submission_is_crashed_with_the_reason(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    await start(jp_serverapp, nbflow_app)
    RecordingRunner.fail_names.add("doomed")
    dep = await _deployment(api)
    _, run = await api("POST", "deployments", dep["id"], "runs", body={"name": "doomed"})

    async def crashed() -> Any:
        _, current = await api("GET", "flow_runs", run["id"])
        return current if current["state"]["type"] == "CRASHED" else None

    current = await eventually(crashed, what="the failed submission to be Crashed")
    assert "could not start the run" in current["state"]["message"]
    assert "no capacity left on the test cluster" in current["state"]["message"]


@pytest.mark.parametrize("limits", [{"global_concurrency_limit": 2}])
async def test_global_limit_holds_excess_runs(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    started = await start(jp_serverapp, nbflow_app)
    dep = await _deployment(api)
    runs = [(await api("POST", "deployments", dep["id"], "runs", body={}))[1] for _ in range(5)]
    await eventually(
        lambda: asyncio.sleep(0, len(RecordingRunner.submissions) >= 2), what="two submissions"
    )
    assert started.dispatcher is not None
    for _ in range(3):
        await started.dispatcher.tick()
    assert len(RecordingRunner.submissions) == 2
    waiting = [r for r in runs if r["id"] not in _submitted_ids()]
    for run in waiting:
        _, current = await api("GET", "flow_runs", run["id"])
        assert current["state"]["type"] == "SCHEDULED"
        # One line says why, however many passes looked at it.
        _, logs = await api("GET", "logs", params={"flow_run_id": run["id"]})
        messages = [entry["message"] for entry in logs["logs"]]
        assert messages == ["waiting for a concurrency slot (2/2 runs running across deployments)"]
    # A run ending frees its slot: the next one is claimed.
    first = RecordingRunner.submissions[0][0]
    for state in ("RUNNING", "COMPLETED"):
        _, result = await api(
            "POST", "flow_runs", str(first.id), "set_state", body={"state": {"type": state}}
        )
        assert result["status"] == "ACCEPT", result
    await eventually(
        lambda: asyncio.sleep(0, len(RecordingRunner.submissions) == 3), what="a third submission"
    )


@pytest.mark.parametrize("limits", [{"global_concurrency_limit": 10}])
async def test_deployment_and_tag_limits(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    started = await start(jp_serverapp, nbflow_app)
    status, _ = await api("PUT", "concurrency_limits", "tag:gpu", body={"limit": 1})
    assert status == 200
    one = await _deployment(api, "one", concurrency_limit=1)
    two = await _deployment(api, "two")
    gpu = await _deployment(api, "gpu", tags=["gpu"])
    runs = [
        (dep, (await api("POST", "deployments", dep["id"], "runs", body={}))[1])
        for dep in (one, one, one, two, two, gpu, gpu)
    ]

    def count(dep: dict[str, Any]) -> int:
        return sum(str(r.deployment_id) == dep["id"] for r, _, _ in RecordingRunner.submissions)

    await eventually(
        lambda: asyncio.sleep(0, (count(one), count(two), count(gpu)) == (1, 2, 1)),
        what="one run of each limited deployment and both of the other",
    )
    assert started.dispatcher is not None
    for _ in range(3):
        await started.dispatcher.tick()
    claimed: dict[str, int] = {}
    for dep, run in runs:  # claims are made in the pass; the limits held the others back
        _, current = await api("GET", "flow_runs", run["id"])
        claimed[dep["name"]] = claimed.get(dep["name"], 0) + (
            current["state"]["type"] != "SCHEDULED"
        )
    assert claimed == {"one": 1, "two": 2, "gpu": 1}
    _, limits = await api("GET", "concurrency_limits")
    assert limits["items"] == [{"key": "tag:gpu", "limit": 1}]
    status, _ = await api("DELETE", "concurrency_limits", "tag:gpu")
    assert status == 204
    await eventually(lambda: asyncio.sleep(0, count(gpu) == 2), what="the second gpu run")
    assert count(one) == 1


def _dispatcher(client: Client, runners: RunnerPool) -> Dispatcher:
    return Dispatcher(client, runners, runner_names={"subprocess"}, claimer="test dispatcher")


def test_claims_race_submits_each_run_once(nbflow_app: NbflowApp) -> None:
    """Two dispatchers (two servers, or a server and a worker) claim from one store."""
    client = nbflow_app.client
    flow = client.create_flow(Flow(name="race"))
    ids = [
        client.create_flow_run(
            FlowRunCreate(flow_id=flow.id, mode="batch", runner="subprocess", state=Scheduled())
        ).id
        for _ in range(30)
    ]
    claims: list[list[ClaimedRun]] = [[], []]
    # The second dispatcher has a store connection of its own, as another server would.
    other = EmbeddedClient.from_url(nbflow_app.db_url)
    dispatchers = [_dispatcher(c, nbflow_app.runners) for c in (client, other)]
    threads = [
        threading.Thread(target=lambda i=i: claims[i].extend(dispatchers[i].claim()))
        for i in range(2)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.close()
    claimed = [c.flow_run.id for batch in claims for c in batch]
    assert sorted(claimed) == sorted(ids)
    assert len(set(claimed)) == len(claimed)


def _race(url: str, runners: RunnerPool, results: list[int], stop: threading.Event) -> None:
    """Claim with a dispatcher of its own store; run and end each run; record the most active."""
    client = EmbeddedClient(FlowRunLifecycle(Store.from_url(url), global_concurrency_limit=1))
    dispatcher = _dispatcher(client, runners)
    active = FlowRunFilter(state_types=[StateType.PENDING, StateType.RUNNING])
    try:
        while not stop.is_set():
            for claimed in dispatcher.claim():
                results.append(client.count_flow_runs(active))
                client.set_flow_run_state(claimed.flow_run.id, Running())
                client.set_flow_run_state(claimed.flow_run.id, Completed())
    finally:
        client.close()


def test_two_dispatchers_never_exceed_a_global_limit_of_one(db_url: str) -> None:
    """Two dispatchers, two store connections, one database, a limit of 1: never two active."""
    store = Store.from_url(db_url)
    flow = store.create_flow(Flow(name="limited"))
    ids = [
        store.create_flow_run(
            FlowRunCreate(flow_id=flow.id, mode="batch", runner="subprocess", state=Scheduled())
        ).id
        for _ in range(20)
    ]
    runners = RunnerPool(lambda name: RecordingRunner())
    results: list[list[int]] = [[], []]
    stop = threading.Event()
    threads = [
        threading.Thread(target=_race, args=(db_url, runners, results[i], stop)) for i in range(2)
    ]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 120
        while store.count_flow_runs(FlowRunFilter(state_types=[StateType.COMPLETED])) < len(ids):
            assert time.monotonic() < deadline, "the runs were not all claimed"
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        store.close()
    seen = results[0] + results[1]
    assert len(seen) == len(ids)  # each run claimed once
    assert max(seen) == 1  # never two runs holding the one slot


def test_policy_lets_the_claimer_move_on_to_submitting() -> None:
    run = FlowRun(name="r", flow_id=UUID(int=1), state=Pending())
    assert evaluate(run, Submitting()).status is SetStateStatus.ACCEPT
    submitting = run.model_copy(update={"state": Submitting()})
    assert evaluate(submitting, Pending()).status is SetStateStatus.ABORT
    assert evaluate(submitting, Submitting()).status is SetStateStatus.ABORT
    assert StateType.PENDING is Submitting().type


def test_dispatcher_stops_the_cancelling_runs_of_its_runners(tmp_path: Path) -> None:
    """Cancel is the dispatcher's: it kills the process, then the run is Cancelled."""
    client = EmbeddedClient.from_url(f"sqlite:///{tmp_path / 'cancel.db'}")
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    dispatcher = _dispatcher(client, RunnerPool(lambda name: SubprocessRunner(client=client)))
    try:
        flow = client.create_flow(Flow(name="cancel"))
        ours, theirs = (
            client.create_flow_run(
                FlowRunCreate(flow_id=flow.id, mode="batch", runner=runner, state=Running())
            )
            for runner in ("subprocess", "docker")
        )
        client.update_flow_run(ours.id, infrastructure_id=f"{socket.gethostname()}:{sleeper.pid}")
        client.update_flow_run(theirs.id, infrastructure_id="elsewhere:1")
        for run in (ours, theirs):
            client.set_flow_run_state(run.id, Cancelling())
        assert dispatcher.stop_cancelling() == 1  # only the runs of its own runners
        dispatcher.close()  # waits for the kill
        assert sleeper.wait(timeout=60) is not None
        state = client.read_flow_run(ours.id).state
        assert state is not None and state.type is StateType.CANCELLED, state
        assert state.message == "cancelled; the run's process was stopped"
        assert client.read_flow_run(theirs.id).state_type is StateType.CANCELLING
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        client.close()
