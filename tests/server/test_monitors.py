"""The monitors: Late, heartbeat timeout, reconciliation, stuck claims and cancellation.

Passes are called directly with a chosen clock (``at``), on the server's real store and
with real processes for liveness and killing; one test runs the service loop itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from nbflow.client.base import Client
from nbflow.schemas import Flow, FlowRun, FlowRunCreate
from nbflow.states import Cancelling, Pending, Running, Scheduled, StateType, Submitting, now
from nbflow_server import NbflowApp
from nbflow_server.services.monitors import Monitor, probe_subprocess
from tests.server.helpers import Api
from tests.server.live_services import BACKENDS, database_url, eventually, services_config

TIMEOUT = 30.0


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def jp_server_config(db_url: str, tmp_path: Path) -> dict[str, Any]:
    return services_config(db_url, tmp_path, services_enabled=False)


@pytest.fixture
def monitor(nbflow_app: NbflowApp) -> Iterator[Monitor]:
    m = Monitor(
        nbflow_app.client,
        nbflow_app.runners,
        late_after=TIMEOUT,
        heartbeat_timeout=TIMEOUT,
        cancel_timeout=TIMEOUT,
        dispatch_runners={"subprocess"},
    )
    m.first_pass = False
    yield m
    m.close()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process in its own session, reaped by a thread (so it does not linger)."""
    popen = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    threading.Thread(target=popen.wait, daemon=True).start()
    yield popen
    if popen.poll() is None:
        os.killpg(popen.pid, signal.SIGKILL)


def _run(client: Client, *, mode: str = "batch", runner: str = "subprocess", **kw: Any) -> FlowRun:
    flow = client.create_flow(Flow(name="monitored"))
    return client.create_flow_run(
        FlowRunCreate(flow_id=flow.id, mode=mode, runner=runner, **kw)  # type: ignore[arg-type]
    )


def _state(client: Client, run: FlowRun) -> tuple[StateType, str, str]:
    state = client.read_flow_run(run.id).state
    assert state is not None
    return state.type, state.name, state.message or ""


def _dead_pid() -> int:
    popen = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    popen.wait()
    return popen.pid


def test_scheduled_runs_past_their_time_become_late(
    monitor: Monitor, nbflow_app: NbflowApp
) -> None:
    client = nbflow_app.client
    expected = now() - timedelta(seconds=5)
    run = _run(client, runner="docker", state=Scheduled(scheduled_time=expected))
    monitor.mark_late(now())
    assert _state(client, run)[:2] == (StateType.SCHEDULED, "Scheduled")
    monitor.mark_late(now() + timedelta(seconds=TIMEOUT))
    assert _state(client, run)[:2] == (StateType.SCHEDULED, "Late")
    assert client.read_flow_run(run.id).expected_start_time == expected
    # A Late run is not marked again.
    assert monitor.mark_late(now() + timedelta(seconds=TIMEOUT)) == 0


def test_silent_running_runs_crash(monitor: Monitor, nbflow_app: NbflowApp) -> None:
    client = nbflow_app.client
    batch = _run(client, runner="docker", state=Running())
    kernel = _run(client, mode="interactive", state=Running())
    beating = _run(client, runner="docker", state=Running())
    later = now() + timedelta(seconds=TIMEOUT * 1.5)
    monitor.check_in_progress(now() + timedelta(seconds=TIMEOUT / 2))
    assert _state(client, batch)[0] is StateType.RUNNING
    # A heartbeat keeps a run alive.
    client.heartbeat(beating.id)
    client.update_flow_run(beating.id, tags=["beating"])
    stored = client.read_flow_run(beating.id)
    assert stored.heartbeat is not None
    monitor.check_in_progress(stored.heartbeat + timedelta(seconds=TIMEOUT / 2))
    assert _state(client, beating)[0] is StateType.RUNNING
    monitor.check_in_progress(later)
    kind, _, message = _state(client, batch)
    assert kind is StateType.CRASHED
    assert "stopped sending heartbeats" in message
    kind, _, message = _state(client, kernel)
    assert kind is StateType.CRASHED
    assert "kernel of this interactive run" in message


def test_startup_reconciliation_keeps_live_processes_and_crashes_dead_ones(
    monitor: Monitor, nbflow_app: NbflowApp, sleeper: subprocess.Popen[bytes]
) -> None:
    client = nbflow_app.client
    host = socket.gethostname()
    alive = _run(client, state=Running())
    client.update_flow_run(alive.id, infrastructure_id=f"{host}:{sleeper.pid}")
    dead = _run(client, state=Running())
    client.update_flow_run(dead.id, infrastructure_id=f"{host}:{_dead_pid()}")
    submitting = _run(client, state=Pending())
    client.set_flow_run_state(submitting.id, Submitting())
    client.update_flow_run(submitting.id, infrastructure_id=f"{host}:{_dead_pid()}")
    fresh_claim = _run(client, state=Pending())
    monitor.first_pass = True
    monitor.check()
    assert _state(client, alive)[0] is StateType.RUNNING
    for run in (dead, submitting):
        kind, _, message = _state(client, run)
        assert kind is StateType.CRASHED
        assert "is gone" in message
        assert "found at server start-up" in message
    # A claim without infrastructure is given time before it counts as abandoned.
    assert _state(client, fresh_claim)[0] is StateType.PENDING
    monitor.check(now() + timedelta(seconds=TIMEOUT * 1.5))
    kind, _, message = _state(client, fresh_claim)
    assert kind is StateType.CRASHED
    assert "never started" in message


def test_cancelling_without_process_and_cancel_timeout(
    monitor: Monitor, nbflow_app: NbflowApp
) -> None:
    client = nbflow_app.client
    unstarted = _run(client, state=Pending())
    client.set_flow_run_state(unstarted.id, Cancelling())
    kernel = _run(client, mode="interactive", state=Running())
    client.set_flow_run_state(kernel.id, Cancelling())
    monitor.check_cancelling(now())
    assert _state(client, unstarted)[0] is StateType.CANCELLED
    # The kernel of an interactive run notices on its own; the timeout ends it otherwise.
    assert _state(client, kernel)[0] is StateType.CANCELLING
    monitor.check_cancelling(now() + timedelta(seconds=TIMEOUT * 1.5))
    kind, _, message = _state(client, kernel)
    assert kind is StateType.CANCELLED
    assert "still Cancelling after" in message


def test_probe_subprocess() -> None:
    assert probe_subprocess(f"{socket.gethostname()}:{_dead_pid()}") is False
    assert probe_subprocess("elsewhere:123") is None
    assert probe_subprocess(f"{socket.gethostname()}:nope") is None


class TestService:
    """The monitors running as a service of the server."""

    @pytest.fixture
    def jp_server_config(self, db_url: str, tmp_path: Path) -> dict[str, Any]:
        return services_config(
            db_url, tmp_path, late_after_seconds=0.5, dispatch_runners=["subprocess"]
        )

    async def test_service_marks_late(
        self, api: Api, jp_serverapp: Any, nbflow_app: NbflowApp
    ) -> None:
        await jp_serverapp.extension_manager.start_all_extensions()
        run = _run(
            nbflow_app.client,
            runner="docker",
            state=Scheduled(scheduled_time=now() - timedelta(seconds=5)),
        )

        async def late() -> Any:
            _, current = await api("GET", "flow_runs", str(run.id))
            return current["state"]["name"] == "Late"

        await eventually(late, what="the run to be marked Late")


# -- start-up reconciliation ---------------------------------------------------------------
# Runs keep executing while their server is down (their writes wait and retry), so after a
# restart a run's silence is counted from the server's start; only a run whose process is
# certainly gone (no process group on this host) is Crashed at once.


@pytest.fixture
def fresh_monitor(nbflow_app: NbflowApp) -> Iterator[Monitor]:
    """A monitor as a freshly started server has it: its next pass is the first."""
    m = Monitor(
        nbflow_app.client,
        nbflow_app.runners,
        late_after=TIMEOUT,
        heartbeat_timeout=TIMEOUT,
        cancel_timeout=TIMEOUT,
        dispatch_runners={"subprocess"},
    )
    yield m
    m.close()


def _running(client: Client, runner: str, infrastructure_id: str) -> FlowRun:
    flow = client.create_flow(Flow(name="restarted"))
    run = client.create_flow_run(
        FlowRunCreate(flow_id=flow.id, mode="batch", runner=runner, state=Running())
    )
    client.update_flow_run(run.id, infrastructure_id=infrastructure_id)
    client.heartbeat(run.id)
    return client.read_flow_run(run.id)


def test_silence_while_the_server_was_down_is_not_a_crash(
    fresh_monitor: Monitor, nbflow_app: NbflowApp
) -> None:
    client = nbflow_app.client
    run = _running(client, "docker", "container-of-unknown-liveness")
    assert run.heartbeat is not None
    restarted = run.heartbeat + timedelta(seconds=TIMEOUT * 2)  # down for two timeouts
    fresh_monitor.check(restarted)
    assert _state(client, run)[0] is StateType.RUNNING
    fresh_monitor.check(restarted + timedelta(seconds=TIMEOUT / 2))
    assert _state(client, run)[0] is StateType.RUNNING
    # Still silent a whole timeout after the server came back: that is a crash.
    fresh_monitor.check(restarted + timedelta(seconds=TIMEOUT * 1.5))
    kind, _, message = _state(client, run)
    assert kind is StateType.CRASHED
    assert "stopped sending heartbeats" in message


def test_a_run_on_another_host_is_judged_by_heartbeats_counted_from_the_restart(
    fresh_monitor: Monitor, nbflow_app: NbflowApp
) -> None:
    client = nbflow_app.client
    run = _running(client, "subprocess", f"not-{socket.gethostname()}:4242")
    assert run.heartbeat is not None
    restarted = run.heartbeat + timedelta(seconds=TIMEOUT * 3)
    fresh_monitor.check(restarted)
    assert _state(client, run)[0] is StateType.RUNNING
    fresh_monitor.check(restarted + timedelta(seconds=TIMEOUT * 1.5))
    kind, _, message = _state(client, run)
    assert kind is StateType.CRASHED
    assert "stopped sending heartbeats" in message


def test_a_process_seen_gone_on_this_host_is_crashed_at_start_up(
    fresh_monitor: Monitor, nbflow_app: NbflowApp
) -> None:
    client = nbflow_app.client
    run = _running(client, "subprocess", f"{socket.gethostname()}:{_dead_pid()}")
    assert run.heartbeat is not None
    # The probe is certain (no process group on this host): no need to wait for silence.
    fresh_monitor.check(run.heartbeat + timedelta(seconds=1))
    kind, _, message = _state(client, run)
    assert kind is StateType.CRASHED
    assert "is gone" in message and "found at server start-up" in message
