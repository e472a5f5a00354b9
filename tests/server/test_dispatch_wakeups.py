"""Event-driven dispatch: a run that becomes due is claimed without waiting for a poll.

- the store tells its in-process listeners, after the commit, about every batch run that
  became due or was scheduled (run now, retry, rescheduled), and NOTIFYs PostgreSQL in
  the same transaction (nothing for a rolled-back one);
- the LISTEN connection reconnects after its backend is killed;
- real servers with ``dispatch_interval=600``: a run-now run and a run scheduled a few
  seconds ahead are claimed long before any poll could have; with two servers on one
  PostgreSQL database, server B claims a run created through server A's API, which does
  not dispatch that runner — only A's NOTIFY can have woken B.

The deadlines are generous and far below the 600 s poll: the tests assert on who claimed
what, never on how fast.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from nbflow.orchestration.lifecycle import FlowRunLifecycle
from nbflow.orchestration.store import Store
from nbflow.orchestration.store.due import parse_payload
from nbflow.schemas import DeploymentCreate, Flow, FlowRun, FlowRunCreate
from nbflow.states import AwaitingRetry, Completed, Pending, Running, StateType, now
from nbflow_server.services.pg_listener import PgListener, libpq_url
from tests.databases import BACKENDS, database_url, postgres_base_url
from tests.runners.live import LiveServer, start_server, stop_server
from tests.server.helpers import make_notebook

#: A runner that starts nothing and never exits (so no exit wakes the dispatcher).
RECORDING = "subprocess=tests.server.live_services:RecordingRunner"
#: Far longer than any deadline here: a claim seen was not made by a poll.
NO_POLL = "600"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    postgres_base_url()  # skip (or fail on CI) without PostgreSQL
    with database_url("postgresql", tmp_path) as url:
        yield url


def _deployment(lifecycle: FlowRunLifecycle) -> Any:
    store = lifecycle.store
    flow = store.create_flow(Flow(name=f"f-{time.monotonic_ns()}"))
    return store.create_deployment(
        DeploymentCreate(flow_id=flow.id, name="d", notebook=make_notebook())
    )


# -- the store's in-process listeners --------------------------------------------------
def test_store_tells_listeners_about_due_runs_after_commit(db_url: str) -> None:
    lifecycle = FlowRunLifecycle(Store.from_url(db_url))
    heard: list[datetime] = []
    remove = lifecycle.store.add_due_listener(heard.append)
    try:
        deployment = _deployment(lifecycle)
        run = lifecycle.run_deployment(deployment)  # run now
        assert heard == [run.expected_start_time]
        later = now() + timedelta(hours=1)
        ahead = lifecycle.run_deployment(deployment, scheduled_time=later)  # the scheduler's
        assert heard[-1] == later == ahead.expected_start_time
        # Interactive runs and runs created already claimed are nobody's to dispatch.
        lifecycle.create_flow_run(
            FlowRunCreate(flow_id=deployment.flow_id, mode="interactive", state=Running())
        )
        lifecycle.create_flow_run(
            FlowRunCreate(flow_id=deployment.flow_id, mode="batch", state=Pending())
        )
        assert len(heard) == 2
        # Claimed, then rescheduled (AwaitingRetry): due again.
        assert lifecycle.store.set_flow_run_state(run.id, Pending()).status.value == "ACCEPT"
        assert len(heard) == 2
        retry_at = now() + timedelta(seconds=30)
        result = lifecycle.store.set_flow_run_state(run.id, AwaitingRetry(scheduled_time=retry_at))
        assert result.status.value == "ACCEPT"
        assert heard[-1] == retry_at
        # A retry of a finished run is a new due run.
        lifecycle.store.set_flow_run_state(ahead.id, Completed(), force=True)
        retried = lifecycle.retry_flow_run(ahead.id)
        assert heard[-1] == retried.expected_start_time
        assert len(heard) == 4
    finally:
        remove()
        lifecycle.close()


# -- PostgreSQL NOTIFY and the LISTEN connection ----------------------------------------
def _collecting_listener(url: str) -> tuple[PgListener, list[str], threading.Event]:
    payloads: list[str] = []
    got = threading.Event()

    def handle(payload: str) -> None:
        payloads.append(payload)
        got.set()

    return PgListener(url, {"nbflow_due": handle}, poll=0.1), payloads, got


async def _wait(event: threading.Event, what: str, timeout: float = 60) -> None:
    done = await asyncio.get_running_loop().run_in_executor(None, event.wait, timeout)
    assert done, f"gave up waiting for {what}"


async def test_notify_is_sent_at_commit_only_and_the_listener_reconnects(pg_url: str) -> None:
    lifecycle = FlowRunLifecycle(Store.from_url(pg_url))
    deployment = _deployment(lifecycle)
    listener, payloads, got = _collecting_listener(pg_url)
    await listener.start()
    try:
        await _wait(listener.listening, "the LISTEN connection")
        # A transaction that makes a run due and rolls back notifies nobody ...
        with pytest.raises(RuntimeError):

            def doomed(conn: sa.Connection) -> None:
                from nbflow.orchestration.store import flow_runs as tx

                tx.create(conn, FlowRunCreate(flow_id=deployment.flow_id, mode="batch"))
                raise RuntimeError("rolled back")

            lifecycle.store.write_transaction(doomed)
        # ... the next committed one does, and is the first notification heard.
        run = lifecycle.run_deployment(deployment)
        await _wait(got, "the NOTIFY of a committed run")
        assert [parse_payload(p) for p in payloads] == [run.expected_start_time]
        assert str(run.id) in payloads[0]

        # Kill the listener's backend: it reconnects and hears the next run.
        pid = listener.backend_pid
        got.clear()
        with psycopg.connect(libpq_url(pg_url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 60
        while listener.connections < 2 or not listener.listening.is_set():
            assert time.monotonic() < deadline, "the listener did not reconnect"
            await asyncio.sleep(0.1)
        assert listener.backend_pid != pid
        again = lifecycle.run_deployment(deployment)
        await _wait(got, "the NOTIFY after the reconnect")
        assert str(again.id) in payloads[-1]
    finally:
        await listener.stop()
        lifecycle.close()


# -- real servers ------------------------------------------------------------------------
def _claims(server: LiveServer, run: FlowRun) -> list[str]:
    """The run's Pending states that say who claimed it."""
    return [
        s.message or ""
        for s in server.client.read_flow_run_states(run.id)
        if s.type is StateType.PENDING and s.name == "Pending"
    ]


def _wait_claimed(server: LiveServer, run: FlowRun, deadline: float = 120) -> FlowRun:
    end = time.monotonic() + deadline
    while True:
        current = server.client.read_flow_run(run.id)
        if current.state is not None and current.state.type is not StateType.SCHEDULED:
            return current
        assert time.monotonic() < end, f"run {run.id} was not claimed (still {current.state})"
        time.sleep(0.1)


def _server(tmp: Path, db_url: str, *extra: str) -> LiveServer:
    tmp.mkdir(parents=True, exist_ok=True)
    return start_server(
        tmp,
        "--db-url", db_url,
        "--set", f"NbflowApp.runner_classes={RECORDING}",
        "--set", f"NbflowApp.dispatch_interval={NO_POLL}",
        "--set", "NbflowApp.scheduler_interval=600",
        *extra,
        services=True,
    )  # fmt: skip


def _deploy(server: LiveServer) -> Any:
    flow = server.client.create_flow(Flow(name=f"f-{time.monotonic_ns()}"))
    return server.client.create_deployment(
        DeploymentCreate(flow_id=flow.id, name="d", notebook=make_notebook(), runner="subprocess")
    )


def test_run_now_and_a_scheduled_time_are_claimed_without_the_poll(
    db_url: str, tmp_path: Path
) -> None:
    server = _server(tmp_path, db_url)
    try:
        deployment = _deploy(server)
        run = server.client.run_deployment(deployment.id)
        _wait_claimed(server, run)
        assert _claims(server, run) == ["claimed by the server's dispatcher"]

        # A run due a few seconds from now: the dispatcher's timer claims it at its time.
        at = now() + timedelta(seconds=3)
        ahead = server.client.run_deployment(deployment.id, scheduled_time=at.isoformat())
        claimed = _wait_claimed(server, ahead)
        assert _claims(server, ahead) == ["claimed by the server's dispatcher"]
        pending = [
            s for s in server.client.read_flow_run_states(ahead.id) if s.type is StateType.PENDING
        ]
        assert pending[0].timestamp >= at, "claimed before its scheduled time"
        assert claimed.state is not None
    finally:
        stop_server(server)


def _listeners(pg_url: str) -> int:
    """How many connections LISTEN on this test's schema."""
    with psycopg.connect(libpq_url(pg_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = current_setting("
            "'application_name') AND pid <> pg_backend_pid() AND query LIKE 'LISTEN %%'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_run_created_through_another_server_is_claimed_through_notify(
    pg_url: str, tmp_path: Path
) -> None:
    # A dispatches only a runner no run uses: every subprocess run is B's to claim.
    a = _server(tmp_path / "a", pg_url, "--set", "NbflowApp.dispatch_runners=elsewhere")
    b = _server(tmp_path / "b", pg_url)
    try:
        deadline = time.monotonic() + 60
        while _listeners(pg_url) < 2:
            assert time.monotonic() < deadline, "the servers' LISTEN connections never came up"
            time.sleep(0.1)
        deployment = _deploy(a)
        # A first run settles B's start-up passes; afterwards B passes only when woken.
        first = a.client.run_deployment(deployment.id)
        _wait_claimed(a, first)
        time.sleep(1.0)
        run = a.client.run_deployment(deployment.id)
        _wait_claimed(a, run)
        assert _claims(a, run) == ["claimed by the server's dispatcher"]
        # B (the only dispatcher of subprocess runs) recorded the submission.
        assert b.client.read_flow_run(run.id).infrastructure_id is not None
    finally:
        stop_server(a)
        stop_server(b)


# -- nbflow worker's loop (Dispatcher.serve) ---------------------------------------------
def test_serve_passes_at_the_next_scheduled_time_not_only_every_interval(
    tmp_path: Path,
) -> None:
    from nbflow.client.embedded import EmbeddedClient
    from nbflow.dispatch import Dispatcher, RunnerPool
    from tests.server.live_services import RecordingRunner

    RecordingRunner.reset()
    lifecycle = FlowRunLifecycle(Store.from_url(f"sqlite:///{tmp_path / 'nbflow.db'}"))
    client = EmbeddedClient(lifecycle)
    deployment = _deployment(lifecycle)
    at = now() + timedelta(seconds=2)
    run = lifecycle.run_deployment(deployment, scheduled_time=at)
    dispatcher = Dispatcher(
        client,
        RunnerPool(lambda name: RecordingRunner(client=client, api_url="http://127.0.0.1:1")),
        runner_names=["subprocess"],
        claimer="worker w",
    )
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.serve, args=(stop, 600.0), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while run.id not in dispatcher.claimed:
            assert time.monotonic() < deadline, "the run was not claimed at its time"
            time.sleep(0.05)
        pending = [s for s in client.read_flow_run_states(run.id) if s.name == "Pending"]
        assert [s.message for s in pending] == ["claimed by worker w"]
        assert pending[0].timestamp >= at
    finally:
        stop.set()
        dispatcher.wake()
        thread.join(30)
        dispatcher.close()
        client.close()


# -- events across servers ---------------------------------------------------------------
async def test_a_websocket_of_one_server_shows_what_another_server_does(
    pg_url: str, tmp_path: Path
) -> None:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    from nbflow.schemas import TaskRun

    loop = asyncio.get_running_loop()
    # A dispatches (and records the submission); B dispatches no runner the runs use.
    a = await loop.run_in_executor(None, _server, tmp_path / "a", pg_url)
    b = await loop.run_in_executor(
        None, _server, tmp_path / "b", pg_url, "--set", "NbflowApp.dispatch_runners=elsewhere"
    )
    ws: Any = None
    try:
        deadline = time.monotonic() + 60
        while await loop.run_in_executor(None, _listeners, pg_url) < 2:
            assert time.monotonic() < deadline, "the servers' LISTEN connections never came up"
            await asyncio.sleep(0.1)
        ws_url = b.url.replace("http://", "ws://") + "/events"
        ws = await websocket_connect(
            HTTPRequest(ws_url, headers={"Authorization": f"token {b.token}"})
        )
        deployment = await loop.run_in_executor(None, _deploy, a)
        run = await loop.run_in_executor(None, a.client.run_deployment, deployment.id)
        seen: list[dict[str, Any]] = []

        async def until(check: Any, what: str) -> dict[str, Any]:
            end = time.monotonic() + 60
            while True:
                found = next((e for e in seen if check(e)), None)
                if found is not None:
                    return found
                left = end - time.monotonic()
                assert left > 0, f"server B's websocket never showed {what}; saw {seen!r}"
                try:
                    message = await asyncio.wait_for(ws.read_message(), timeout=left)
                except TimeoutError:
                    continue
                assert message is not None, "server B closed the websocket"
                seen.append(json.loads(message))

        # The run A created, claimed and submitted (its infrastructure id recorded by A).
        submitted = await until(
            lambda e: (
                e.get("flow_run_id") == str(run.id)
                and (e.get("flow_run") or {}).get("infrastructure_id")
            ),
            "the run submitted by server A",
        )
        assert submitted["type"] == "flow_run_state"
        assert submitted["state"]["type"] == "PENDING"
        # A task run reported to A.
        task = TaskRun(flow_run_id=run.id, name="t", task_key="t", state=Running())
        await loop.run_in_executor(None, a.client.write_task_runs, [task], [(task.id, Running())])
        event = await until(
            lambda e: (
                e.get("type") == "task_run_state"
                and (e.get("task_run") or {}).get("id") == str(task.id)
            ),
            "the task run reported to server A",
        )
        assert event["flow_run_id"] == str(run.id)
        assert event["state"]["type"] == "RUNNING"
        # The deployment A created came through too (the ws was open before it was made).
        assert any(
            e["type"] == "deployment" and e["deployment"]["id"] == str(deployment.id) for e in seen
        ), [e["type"] for e in seen]
    finally:
        if ws is not None:
            ws.close()
        await loop.run_in_executor(None, stop_server, a)
        await loop.run_in_executor(None, stop_server, b)


# -- the log cursor never skips a batch committed late -------------------------------------
def test_log_cursor_never_skips_a_batch_committed_late(db_url: str) -> None:
    """Two writers of one run's logs: the one with the lower ids commits last.

    The first writer is the claim's "waiting for a concurrency slot" record (written in the
    claim transaction), held open here; the second is an ordinary batch.  A reader paging
    by cursor meanwhile must still end up with both records.
    """
    from nbflow.orchestration.store.claims import _log_waiting
    from nbflow.schemas import Log

    store = Store.from_url(db_url)
    lifecycle = FlowRunLifecycle(store)
    run = lifecycle.run_deployment(_deployment(lifecycle))
    inserted, release = threading.Event(), threading.Event()

    def slow_writer(conn: sa.Connection) -> None:
        _log_waiting(conn, {run.id: "first, committed late"}, now())
        inserted.set()
        assert release.wait(60)

    first = threading.Thread(target=store.write_transaction, args=(slow_writer,))
    first.start()
    try:
        assert inserted.wait(60)
        second = threading.Thread(
            target=store.write_logs,
            args=([Log(flow_run_id=run.id, level=20, message="second", timestamp=now())],),
        )
        second.start()
        second.join(1.0)  # it commits now, unless it must wait for the first (the fix)
        seen, cursor = [], 0
        page, cursor = store.read_logs(run.id, cursor=cursor)
        seen += [entry.message for entry in page]
    finally:
        release.set()
        first.join(60)
    second.join(60)
    page, cursor = store.read_logs(run.id, cursor=cursor)
    seen += [entry.message for entry in page]
    assert sorted(seen) == ["first, committed late", "second"]
    lifecycle.close()


def test_other_servers_events_reach_websockets_only_never_the_services() -> None:
    """A remote event must not reach a service (a notification rule would fire twice)."""
    from nbflow_server.events import EventBus

    bus = EventBus()
    relayed: list[dict[str, Any]] = []
    bus.relay = relayed.append
    websocket: list[dict[str, Any]] = []
    service: list[dict[str, Any]] = []
    bus.subscribe(websocket.append, remote=True)
    bus.subscribe(service.append)
    local, remote = {"type": "flow_run_state", "n": 1}, {"type": "flow_run_state", "n": 2}
    bus.publish(local)
    bus.publish_remote(remote)
    assert websocket == [local, remote]
    assert service == [local]
    assert relayed == [local]  # a remote event is never relayed again
