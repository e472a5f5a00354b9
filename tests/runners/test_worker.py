"""``nbflow worker``: claims due runs of its runner exactly once, even racing the server.

A live ``nbflow server`` with its services on; its dispatcher and the workers use
:class:`~tests.runners.live.QuickRunner` (a real subprocess runner whose process exits at
once), because what is under test is who claims and submits each run.  The Docker and
Kubernetes test modules run real notebooks through the runners themselves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

import pytest

from nbflow.cli import EXIT_USAGE, main
from nbflow.client.http import APIError, HTTPClient
from nbflow.dispatch import Dispatcher
from nbflow.runners import Runner
from nbflow.runners.docker import DockerRunner
from nbflow.runners.subprocess import SubprocessRunner
from nbflow.schemas import FlowRun, FlowRunCreate, TaskRunFilter
from nbflow.states import Scheduled, StateType, now
from tests.runners.live import (
    FLOW_NOTEBOOK,
    TEST_IMAGE,
    LiveServer,
    QuickRunner,
    cancel_through_worker,
    make_worker,
    require,
    start_server,
    stop_server,
)

QUICK = "tests.runners.live:QuickRunner"


@pytest.fixture(scope="module")
def dispatching_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server whose dispatcher submits subprocess runs (with QuickRunner) fast."""
    server = start_server(
        tmp_path_factory.mktemp("dispatching"),
        "--set", f"NbflowApp.runner_classes=subprocess={QUICK}",
        "--set", "NbflowApp.dispatch_interval=0.1",
        services=True,
    )  # fmt: skip
    try:
        yield server
    finally:
        stop_server(server)


def _scheduled_runs(server: LiveServer, runner: str, count: int, delay: float) -> list[FlowRun]:
    """Create ``count`` batch runs of a new deployment, all due ``delay`` seconds from now."""
    flow, deployment = server.deploy(["x = 1"], runner)
    at = now() + timedelta(seconds=delay)
    return [
        server.client.create_flow_run(
            FlowRunCreate(
                flow_id=flow.id,
                deployment_id=deployment.id,
                runner=runner,
                mode="batch",
                state=Scheduled(scheduled_time=at),
            )
        )
        for _ in range(count)
    ]


def _worker(
    server: LiveServer, runner_name: str, runner_cls: type[Runner] = QuickRunner, **kwargs: Any
) -> tuple[Dispatcher, HTTPClient]:
    return make_worker(server, runner_name, runner_cls, **kwargs)


def _left_scheduled(server: LiveServer, ids: list[UUID]) -> int:
    return sum(1 for i in ids if server.client.read_flow_run(i).state_type is StateType.SCHEDULED)


def _wait_submitted(server: LiveServer, ids: list[UUID]) -> None:
    """Wait until every run has an infrastructure id (claims are submitted asynchronously)."""
    deadline = time.monotonic() + 120
    while not all(server.client.read_flow_run(i).infrastructure_id for i in ids):
        assert time.monotonic() < deadline, "claimed runs were never submitted"
        time.sleep(0.2)


def test_dispatcher_and_worker_race_and_each_run_is_claimed_once(
    dispatching_server: LiveServer,
) -> None:
    server = dispatching_server
    runs = _scheduled_runs(server, "subprocess", 16, delay=3)
    ids = [r.id for r in runs]
    worker, client = _worker(server, "subprocess")
    stop = threading.Event()
    thread = threading.Thread(target=worker.serve, args=(stop, 0.02), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while _left_scheduled(server, ids):
            assert time.monotonic() < deadline, "runs stayed Scheduled"
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(30)
    assert worker.wait_all(60)
    _wait_submitted(server, ids)
    by_worker = by_server = 0
    for run_id in ids:
        states = server.client.read_flow_run_states(run_id)
        claims = [s for s in states if s.name == "Pending"]
        assert len(claims) == 1, [(s.name, s.message) for s in states]
        assert [s.name for s in states].count("Submitting") == 1
        assert server.client.read_flow_run(run_id).infrastructure_id
        if "worker" in (claims[0].message or ""):
            by_worker += 1
            assert run_id in worker.claimed
        else:
            by_server += 1
            assert run_id not in worker.claimed
    assert by_worker + by_server == len(ids)
    assert len(worker.claimed) == by_worker
    print(f"claims: worker {by_worker}, server dispatcher {by_server}")
    client.close()


def test_server_leaves_other_runners_to_workers_and_two_workers_claim_once(
    dispatching_server: LiveServer,
) -> None:
    server = dispatching_server
    ours = _scheduled_runs(server, "docker", 12, delay=0)
    theirs = _scheduled_runs(server, "subprocess", 1, delay=0)
    server.wait_state(theirs[0].id, "PENDING", "RUNNING", "COMPLETED", "CRASHED")
    time.sleep(0.5)  # several more dispatcher passes (0.1 s apart)
    assert _left_scheduled(server, [r.id for r in ours]) == len(ours)

    workers = [_worker(server, "docker", limit=4, name=f"w{i}") for i in range(2)]
    stop = threading.Event()
    threads = [threading.Thread(target=w.serve, args=(stop, 0.02), daemon=True) for w, _ in workers]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 120
        while _left_scheduled(server, [r.id for r in ours]):
            assert time.monotonic() < deadline, "runs stayed Scheduled"
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    _wait_submitted(server, [r.id for r in ours])
    claimed = [set(w.claimed) for w, _ in workers]
    assert claimed[0].isdisjoint(claimed[1])
    assert claimed[0] | claimed[1] == {r.id for r in ours}
    for run in ours:
        names = [s.name for s in server.client.read_flow_run_states(run.id)]
        assert names.count("Pending") == 1 and names.count("Submitting") == 1, names
    for w, c in workers:
        assert w.wait_all(60)
        c.close()


def test_worker_gives_runs_their_own_token(dispatching_server: LiveServer) -> None:
    server = dispatching_server
    user = HTTPClient(server.url, token=server.token)
    run, other = _scheduled_runs(server, "docker", 2, delay=0)
    claimed = user.claim_flow_runs(["docker"], claimer="token test")
    assert {run.id, other.id} <= {c.flow_run.id for c in claimed}
    token = next(c.token for c in claimed if c.flow_run.id == run.id)
    assert token == server.run_token(run) and token != server.token  # minted for this run
    scoped = HTTPClient(server.url, token=token)
    assert scoped.read_flow_run(run.id).id == run.id
    with pytest.raises(APIError):
        scoped.read_flow_run(other.id)  # another run: refused
    with pytest.raises(APIError):
        scoped.mint_run_token(run.id)  # a run token cannot mint tokens
    with pytest.raises(APIError):
        scoped.claim_flow_runs(["docker"], claimer="a run")  # nor claim runs
    user.close()
    scoped.close()


def test_worker_command_line(dispatching_server: LiveServer, tmp_path: Path) -> None:
    server = dispatching_server
    runs = _scheduled_runs(server, "kubernetes", 2, delay=0)
    env = {
        **os.environ,
        "NBFLOW_API_URL": server.url,
        "NBFLOW_API_TOKEN": server.token,
        "NBFLOW_HOME": str(tmp_path),
    }
    # The real command line, with every runner name resolving to QuickRunner in that process.
    code = (
        "import sys\n"
        "import nbflow.runners as r\n"
        "from tests.runners.live import QuickRunner\n"
        "r.get_runner = lambda name: QuickRunner\n"
        "from nbflow.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "worker", "--runner", "kubernetes", "--once",
         "--limit", "5"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # Each run is announced with its infrastructure id once submitted.
    submitted = {line.split()[2] for line in done.stdout.splitlines() if " as " in line}
    assert submitted == {str(run.id) for run in runs}, done.stdout
    for run in runs:
        assert server.client.read_flow_run(run.id).state_type is not StateType.SCHEDULED


def test_worker_usage_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NBFLOW_API_URL", raising=False)
    from nbflow.settings import reload_settings

    reload_settings()
    try:
        assert main(["worker", "--runner", "docker"]) == EXIT_USAGE
        assert "NBFLOW_API_URL" in capsys.readouterr().err
        monkeypatch.setenv("NBFLOW_API_URL", "http://127.0.0.1:1/nbflow/api/v1")
        reload_settings()
        assert main(["worker", "--runner", "nope"]) == EXIT_USAGE
        assert "nope" in capsys.readouterr().err
        assert main(["worker", "--runner", "docker", "--limit", "0"]) == EXIT_USAGE
    finally:
        monkeypatch.undo()
        reload_settings()


def test_worker_runs_a_scheduled_deployment_run_in_docker(dispatching_server: LiveServer) -> None:
    require(
        "NBFLOW_TEST_DOCKER",
        "run scripts/docker-up.sh and scripts/docker-images.sh, then set NBFLOW_TEST_DOCKER=1",
    )
    server = dispatching_server
    home = str(server.home)
    job = {
        "image": TEST_IMAGE,
        "image_pull_policy": "Never",
        "volumes": [f"{home}:{home}"],
        "env": {"NBFLOW_HOME": home, "NBFLOW_RESULTS_URL": f"{home}/results"},
        "auto_remove": True,
    }
    flow, deployment = server.deploy(FLOW_NOTEBOOK, "docker", job_variables=job)
    run = server.client.create_flow_run(
        FlowRunCreate(
            flow_id=flow.id,
            deployment_id=deployment.id,
            runner="docker",
            mode="batch",
            state=Scheduled(),
        )
    )
    worker, client = _worker(server, "docker", DockerRunner, limit=1)
    stop = threading.Event()
    thread = threading.Thread(target=worker.serve, args=(stop, 0.2), daemon=True)
    thread.start()
    try:
        final = server.wait_state(run.id, "COMPLETED", "FAILED", "CRASHED", timeout=300)
    finally:
        stop.set()
        thread.join(30)
    assert worker.wait_all(60)
    worker.close()
    worker.runners.close()
    client.close()
    assert final.state is not None and final.state.type is StateType.COMPLETED, final.state
    assert worker.claimed == [run.id]
    assert final.infrastructure_id and final.infrastructure_id.count(":") >= 1
    tasks = server.client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))
    assert [t.name for t in tasks] == ["extract", "report"]


# -- a server that leaves subprocess runs to workers ----------------------------------------
RUNNER_DEFAULTS = {"subprocess": {"env": {"FROM_DEFAULTS": "default", "B": "default"}}}


@pytest.fixture(scope="module")
def worker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server (services on) whose own dispatcher takes no subprocess runs."""
    server = start_server(
        tmp_path_factory.mktemp("worker-server"),
        "--set", "NbflowApp.dispatch_runners=kubernetes",
        "--set", f"NbflowApp.runner_defaults={RUNNER_DEFAULTS!r}",
        services=True,
    )  # fmt: skip
    try:
        yield server
    finally:
        stop_server(server)


class EnvQuickRunner(QuickRunner):
    """QuickRunner recording the job variables each run was submitted with."""

    seen: ClassVar[dict[UUID, dict[str, Any]]] = {}

    def submit(self, flow_run: FlowRun, job_variables: Mapping[str, Any] | None = None) -> str:
        self.seen[flow_run.id] = dict(job_variables or {})
        return super().submit(flow_run, job_variables)


def test_runner_default_env_survives_on_worker_runs(worker_server: LiveServer) -> None:
    server = worker_server
    flow, deployment = server.deploy(
        ["x = 1"], "subprocess", job_variables={"env": {"B": "deployment", "C": "deployment"}}
    )
    run = server.client.create_flow_run(
        FlowRunCreate(
            flow_id=flow.id,
            deployment_id=deployment.id,
            mode="batch",
            state=Scheduled(),
            job_variables={"env": {"C": "run"}},
        )
    )
    worker, client = _worker(server, "subprocess", EnvQuickRunner)
    try:
        assert len(worker.run_once()) == 1
        assert worker.wait_all(60)
    finally:
        worker.close()
        client.close()
    # runner defaults < deployment < run, env merged by variable: the default survives.
    assert EnvQuickRunner.seen[run.id]["env"] == {
        "FROM_DEFAULTS": "default",
        "B": "deployment",
        "C": "run",
    }


def test_worker_cancel_stops_a_subprocess_run(worker_server: LiveServer) -> None:
    def left(infra: str) -> bool:
        try:
            os.killpg(int(infra.rpartition(":")[2]), 0)
        except ProcessLookupError:
            return False
        return True

    cancel_through_worker(worker_server, "subprocess", SubprocessRunner, left)
