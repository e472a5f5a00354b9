"""The scheduler keeps only the next few runs of each schedule; preview and Upcoming agree.

- an every-minute schedule has at most ``scheduled_runs_ahead`` Scheduled runs waiting,
  pass after pass and across two servers on one database; as the clock moves, it tops up;
- a daily schedule still gets its next run when that is a day ahead;
- ``/schedules/preview`` answers the times the scheduler creates (the issue's bug: the
  preview counted an interval from "now", :06 past each minute, while the runs ran at :00);
- ``/schedules/upcoming`` lists each deployment's next times from the same code;
- ``GET /flow_runs?view=history|upcoming`` keeps history and waiting runs apart.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from traitlets import TraitError
from traitlets.config import Config

from nbflow.client.embedded import EmbeddedClient
from nbflow.schemas import (
    Deployment,
    DeploymentCreate,
    Flow,
    FlowRunCreate,
    FlowRunFilter,
    Schedule,
)
from nbflow.states import Completed, Pending, Running, Scheduled, StateType, now
from nbflow_server import NbflowApp
from nbflow_server.services.scheduler import SchedulerService, schedule_deployments
from tests.databases import BACKENDS, database_url
from tests.server.helpers import Api, make_notebook


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def store(db_url: str) -> Iterator[EmbeddedClient]:
    client = EmbeddedClient.from_url(db_url)
    yield client
    client.close()


def _deploy(store: EmbeddedClient, *schedules: Schedule, name: str = "d") -> Deployment:
    flow = store.create_flow(Flow(name=f"f-{name}"))
    return store.create_deployment(
        DeploymentCreate(flow_id=flow.id, name=name, schedules=list(schedules))
    )


def _waiting(store: EmbeddedClient, deployment: Deployment, at: datetime) -> list[datetime]:
    """The expected start times of the deployment's Scheduled runs after ``at``."""
    runs = store.read_flow_runs(
        FlowRunFilter(
            deployment_ids=[deployment.id],
            state_types=[StateType.SCHEDULED],
            start_after=at,
            sort="expected_start_asc",
        )
    )
    return [r.expected_start_time for r in runs if r.expected_start_time]


def test_an_every_minute_schedule_keeps_only_the_next_few(store: EmbeddedClient) -> None:
    dep = _deploy(store, Schedule(cron="* * * * *"))
    at = utc(2026, 6, 1, 10, 0, 20)
    created = schedule_deployments(store.lifecycle, at=at, runs_ahead=3)
    expected = [utc(2026, 6, 1, 10, m) for m in (1, 2, 3)]
    assert [r.expected_start_time for r in created] == expected
    for _ in range(3):  # passes again: nothing new, still three waiting
        assert schedule_deployments(store.lifecycle, at=at, runs_ahead=3) == []
    assert _waiting(store, dep, at) == expected
    assert store.count_flow_runs(FlowRunFilter(deployment_ids=[dep.id])) == 3

    # At 10:02:30 two of them are due: the pass tops up to three waiting again.
    later = at + timedelta(seconds=130)
    topped = schedule_deployments(store.lifecycle, at=later, runs_ahead=3)
    assert [r.expected_start_time for r in topped] == [utc(2026, 6, 1, 10, m) for m in (4, 5)]
    assert _waiting(store, dep, later) == [utc(2026, 6, 1, 10, m) for m in (3, 4, 5)]
    assert store.count_flow_runs(FlowRunFilter(deployment_ids=[dep.id])) == 5


def test_a_run_that_moved_on_is_not_created_again(store: EmbeddedClient) -> None:
    dep = _deploy(store, Schedule(interval_seconds=60))
    at = utc(2026, 6, 1, 10, 0, 20)
    first, *_ = schedule_deployments(store.lifecycle, at=at, runs_ahead=2)
    store.cancel_flow_run(first.id)  # cancelled ahead of time: the schedule must not revive it
    assert schedule_deployments(store.lifecycle, at=at, runs_ahead=2) == []
    assert store.count_flow_runs(FlowRunFilter(deployment_ids=[dep.id])) == 2


def test_a_daily_schedule_gets_its_next_run_a_day_ahead(store: EmbeddedClient) -> None:
    daily = _deploy(store, Schedule(cron="0 6 * * *", timezone="Europe/Berlin"))
    at = utc(2026, 6, 1, 7, 0)  # 09:00 in Berlin: today's 06:00 has passed
    created = schedule_deployments(store.lifecycle, at=at, runs_ahead=1)
    assert [r.expected_start_time for r in created] == [utc(2026, 6, 2, 4, 0)]
    assert _waiting(store, daily, at) == [utc(2026, 6, 2, 4, 0)]


def test_each_schedule_of_a_deployment_keeps_its_own_next_runs(store: EmbeddedClient) -> None:
    dep = _deploy(
        store,
        Schedule(cron="* * * * *"),
        Schedule(cron="0 6 * * *"),
        Schedule(cron="30 * * * *", active=False),
    )
    at = utc(2026, 6, 1, 10, 0, 20)
    schedule_deployments(store.lifecycle, at=at, runs_ahead=2)
    assert _waiting(store, dep, at) == [
        utc(2026, 6, 1, 10, 1),
        utc(2026, 6, 1, 10, 2),
        utc(2026, 6, 2, 6, 0),
        utc(2026, 6, 3, 6, 0),
    ]


def test_two_servers_on_one_database_create_each_run_once(db_url: str) -> None:
    servers = [EmbeddedClient.from_url(db_url) for _ in range(2)]
    try:
        dep = _deploy(servers[0], Schedule(cron="* * * * *"))
        at = utc(2026, 6, 1, 10, 0, 20)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def passes(server: EmbeddedClient) -> None:
            try:
                barrier.wait()
                for step in range(4):
                    schedule_deployments(
                        server.lifecycle, at=at + timedelta(seconds=30 * step), runs_ahead=3
                    )
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=passes, args=(s,)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        runs = servers[0].read_flow_runs(FlowRunFilter(deployment_ids=[dep.id]))
        keys = [r.idempotency_key for r in runs]
        assert len(keys) == len(set(keys)) == 4  # 10:01 .. 10:04, each once
        assert _waiting(servers[0], dep, at + timedelta(seconds=90)) == [
            utc(2026, 6, 1, 10, m) for m in (2, 3, 4)
        ]
    finally:
        for s in servers:
            s.close()


async def test_the_service_tops_up_as_its_clock_moves(store: EmbeddedClient) -> None:
    dep = _deploy(store, Schedule(interval_seconds=60))
    clock = [utc(2026, 6, 1, 10, 0, 6)]
    announced: list[datetime | None] = []
    service = SchedulerService(
        store.lifecycle,
        interval=3600,
        runs_ahead=2,
        clock=lambda: clock[0],
        on_created=lambda run: announced.append(run.expected_start_time),
    )
    await service.tick()
    assert announced == [utc(2026, 6, 1, 10, 1), utc(2026, 6, 1, 10, 2)]
    await service.tick()
    assert len(announced) == 2
    clock[0] += timedelta(minutes=1)
    await service.tick()
    assert announced[2:] == [utc(2026, 6, 1, 10, 3)]
    assert _waiting(store, dep, clock[0]) == [utc(2026, 6, 1, 10, 2), utc(2026, 6, 1, 10, 3)]


def test_the_traitlet_and_the_deprecated_ones(caplog: pytest.LogCaptureFixture) -> None:
    assert NbflowApp().scheduled_runs_ahead == 3
    with pytest.raises(TraitError, match="scheduled_runs_ahead=0: must be at least 1"):
        NbflowApp(scheduled_runs_ahead=0)
    app = NbflowApp()
    app.log.addHandler(caplog.handler)  # the application's logger does not propagate
    try:
        app.update_config(Config({"NbflowApp": {"schedule_ahead_seconds": 60.0}}))
    finally:
        app.log.removeHandler(caplog.handler)
    assert "NbflowApp.schedule_ahead_seconds is deprecated and ignored" in caplog.text


# -- through the API ----------------------------------------------------------------------


@pytest.fixture
def jp_server_config(db_url: str, tmp_path: Path) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"nbflow_server": True}},
        "NbflowApp": {
            "db_url": db_url,
            "secret_file": str(tmp_path / "secret"),
            "services_enabled": False,
            "scheduled_runs_ahead": 3,
        },
    }


PREVIEW_CASES = [
    # The case: an every-minute interval previewed at :06 past runs at :00.
    {"interval_seconds": 60},
    {"interval_seconds": 900, "anchor_date": "2026-01-01T00:05:00+00:00"},
    {"cron": "*/20 * * * *", "timezone": "Europe/Berlin"},
    {"cron": "30 2 * * *", "timezone": "Europe/Berlin"},  # across a spring-forward gap
]


@pytest.mark.parametrize("schedule", PREVIEW_CASES)
async def test_the_preview_shows_the_runs_the_scheduler_creates(
    api: Api, nbflow_app: NbflowApp, schedule: dict[str, Any]
) -> None:
    at = utc(2026, 3, 27, 10, 0, 6)
    status, preview = await api(
        "GET", "schedules", "preview", params={**schedule, "count": 3, "after": at.isoformat()}
    )
    assert status == 200, preview
    shown = [datetime.fromisoformat(t).astimezone(UTC) for t in preview["next"]]

    _, flow = await api("POST", "flows", body={"name": "p"})
    _, dep = await api(
        "POST",
        "deployments",
        body={
            "flow_id": flow["id"],
            "name": "d",
            "notebook": make_notebook(),
            "schedules": [schedule],
        },
    )
    created = await asyncio.get_running_loop().run_in_executor(
        None, lambda: schedule_deployments(nbflow_app.lifecycle, at=at, runs_ahead=3)
    )
    assert [r.expected_start_time for r in created] == shown
    assert all(r.deployment_id is not None and str(r.deployment_id) == dep["id"] for r in created)
    if schedule.get("interval_seconds") == 60:
        assert [t.second for t in shown] == [0, 0, 0]


async def test_the_preview_is_in_the_schedules_time_zone(api: Api) -> None:
    status, preview = await api(
        "GET",
        "schedules",
        "preview",
        params={"cron": "0 6 * * *", "timezone": "Europe/Berlin", "after": "2026-06-01T00:00Z"},
    )
    assert status == 200
    assert preview["next"][0] == "2026-06-01T06:00:00+02:00"
    status, body = await api("GET", "schedules", "preview", params={"cron": "0 25 * * *"})
    assert status == 400 and body["errors"][0]["field"] == "query.cron"
    status, body = await api("GET", "schedules", "preview", params={"timezone": "UTC"})
    assert status == 400 and body["errors"][0]["field"] == "query.cron"
    status, body = await api("GET", "schedules", "preview", params={"cron": "0 0 30 2 *"})
    assert status == 400 and body["errors"][0]["field"] == "query.cron"
    assert "February has no 30th" in body["message"]


async def test_upcoming_lists_each_deployments_next_times(api: Api, nbflow_app: NbflowApp) -> None:
    _, flow = await api("POST", "flows", body={"name": "u"})
    body = {"flow_id": flow["id"], "notebook": make_notebook()}
    _, minutely = await api(
        "POST", "deployments", body={**body, "name": "m", "schedules": [{"cron": "* * * * *"}]}
    )
    _, manual = await api("POST", "deployments", body={**body, "name": "manual"})
    _, paused = await api(
        "POST",
        "deployments",
        body={**body, "name": "p", "paused": True, "schedules": [{"interval_seconds": 60}]},
    )
    at = "2026-06-01T10:00:20+00:00"
    status, page = await api("GET", "schedules", "upcoming", params={"count": 4, "after": at})
    assert status == 200, page
    by_name = {item["deployment_name"]: item for item in page["items"]}
    assert set(by_name) == {"m", "p"}  # the one without a schedule has nothing upcoming
    assert by_name["m"]["deployment_id"] == minutely["id"] and not by_name["m"]["paused"]
    assert [t[11:16] for t in by_name["m"]["next"]] == ["10:01", "10:02", "10:03", "10:04"]
    assert by_name["p"]["paused"] and by_name["p"]["deployment_id"] == paused["id"]
    assert manual["id"] not in {item["deployment_id"] for item in page["items"]}
    # The scheduler creates exactly the first times the route lists.
    created = await asyncio.get_running_loop().run_in_executor(
        None,
        lambda: schedule_deployments(
            nbflow_app.lifecycle, at=datetime.fromisoformat(at), runs_ahead=3
        ),
    )
    listed = [datetime.fromisoformat(t) for t in by_name["m"]["next"][:3]]
    assert [r.expected_start_time for r in created] == listed
    status, one = await api(
        "GET",
        "schedules",
        "upcoming",
        params={"deployment_ids": minutely["id"], "count": 1, "after": at},
    )
    assert status == 200 and [i["deployment_name"] for i in one["items"]] == ["m"]
    assert len(one["items"][0]["next"]) == 1


async def test_history_and_upcoming_are_apart(api: Api, nbflow_app: NbflowApp) -> None:
    _, flow = await api("POST", "flows", body={"name": "h"})
    await api(
        "POST",
        "deployments",
        body={
            "flow_id": flow["id"],
            "name": "d",
            "notebook": make_notebook(),
            "schedules": [{"interval_seconds": 3600}],
        },
    )
    client = nbflow_app.client
    loop = asyncio.get_running_loop()
    upcoming = await loop.run_in_executor(
        None, lambda: schedule_deployments(nbflow_app.lifecycle, runs_ahead=3)
    )
    assert len(upcoming) == 3

    def finished_run(name: str) -> str:
        run = client.create_flow_run(FlowRunCreate(flow_id=flow["id"], name=name, mode="batch"))
        for state in (Pending(), Running(), Completed()):
            client.set_flow_run_state(run.id, state)
        return str(run.id)

    older = await loop.run_in_executor(None, finished_run, "older")
    newer = await loop.run_in_executor(None, finished_run, "newer")
    # A Scheduled run whose time has passed (Late, or about to start) is history, not upcoming.
    past = await loop.run_in_executor(
        None,
        lambda: client.create_flow_run(
            FlowRunCreate(
                flow_id=flow["id"],
                name="due",
                mode="batch",
                state=Scheduled(scheduled_time=now() - timedelta(minutes=5)),
            )
        ),
    )

    status, history = await api("GET", "flow_runs", params={"view": "history"})
    assert status == 200, history
    assert [r["id"] for r in history["items"]] == [str(past.id), newer, older]
    assert history["total"] == 3
    status, waiting = await api("GET", "flow_runs", params={"view": "upcoming"})
    assert status == 200
    soonest_first = sorted(upcoming, key=lambda r: r.expected_start_time or now())
    assert [r["id"] for r in waiting["items"]] == [str(r.id) for r in soonest_first]
    assert waiting["total"] == 3
    _, everything = await api("GET", "flow_runs")
    assert everything["total"] == 6
    status, body = await api("GET", "flow_runs", params={"view": "later"})
    assert status == 400 and body["errors"][0]["field"] == "query.view"
