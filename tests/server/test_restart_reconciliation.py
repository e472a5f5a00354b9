"""Start-up reconciliation does not crash runs that may still be alive.

Runs keep executing while their server is down (their writes wait and retry), so after a
restart a run's silence is counted from the server's start; only a run whose process is
certainly gone (no process group on this host) is Crashed at once.  Passes run with a
chosen clock on the server's real store (SQLite and PostgreSQL).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from nbflow.client.base import Client
from nbflow.schemas import Flow, FlowRun, FlowRunCreate
from nbflow.states import Running, StateType
from nbflow_server import NbflowApp
from nbflow_server.services.monitors import Monitor
from tests.server.live_services import BACKENDS, database_url, services_config

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


def _state(client: Client, run: FlowRun) -> tuple[StateType, str]:
    state = client.read_flow_run(run.id).state
    assert state is not None
    return state.type, state.message or ""


def _dead_pid() -> int:
    popen = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    popen.wait()
    return popen.pid


def test_silence_while_the_server_was_down_is_not_a_crash(
    monitor: Monitor, nbflow_app: NbflowApp
) -> None:
    client = nbflow_app.client
    run = _running(client, "docker", "container-of-unknown-liveness")
    assert run.heartbeat is not None
    restarted = run.heartbeat + timedelta(seconds=TIMEOUT * 2)  # down for two timeouts
    monitor.check(restarted)
    assert _state(client, run)[0] is StateType.RUNNING
    monitor.check(restarted + timedelta(seconds=TIMEOUT / 2))
    assert _state(client, run)[0] is StateType.RUNNING
    # Still silent a whole timeout after the server came back: that is a crash.
    monitor.check(restarted + timedelta(seconds=TIMEOUT * 1.5))
    kind, message = _state(client, run)
    assert kind is StateType.CRASHED
    assert "stopped sending heartbeats" in message


def test_a_run_on_another_host_is_judged_by_heartbeats_counted_from_the_restart(
    monitor: Monitor, nbflow_app: NbflowApp
) -> None:
    client = nbflow_app.client
    run = _running(client, "subprocess", f"not-{socket.gethostname()}:4242")
    assert run.heartbeat is not None
    restarted = run.heartbeat + timedelta(seconds=TIMEOUT * 3)
    monitor.check(restarted)
    assert _state(client, run)[0] is StateType.RUNNING
    monitor.check(restarted + timedelta(seconds=TIMEOUT * 1.5))
    kind, message = _state(client, run)
    assert kind is StateType.CRASHED
    assert "stopped sending heartbeats" in message


def test_a_process_seen_gone_on_this_host_is_crashed_at_start_up(
    monitor: Monitor, nbflow_app: NbflowApp
) -> None:
    client = nbflow_app.client
    run = _running(client, "subprocess", f"{socket.gethostname()}:{_dead_pid()}")
    assert run.heartbeat is not None
    # The probe is certain (no process group on this host): no need to wait for silence.
    monitor.check(run.heartbeat + timedelta(seconds=1))
    kind, message = _state(client, run)
    assert kind is StateType.CRASHED
    assert "is gone" in message and "found at server start-up" in message
