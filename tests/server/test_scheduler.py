"""The scheduler: DST-correct cron times, intervals, idempotent run creation, the live service."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nbflow.client.embedded import EmbeddedClient
from nbflow.exceptions import ValidationError
from nbflow.schemas import DeploymentCreate, Flow, FlowRunFilter, Schedule
from nbflow_server import NbflowApp
from nbflow_server.services.scheduler import check_schedule, schedule_deployments, schedule_times
from tests.server.helpers import Api, make_notebook


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def hm(times: list[datetime]) -> list[str]:
    return [t.strftime("%m-%d %H:%M") for t in times]


# One row per rule: (cron, timezone, window start, window end, expected UTC times).
CRON_CASES = [
    # Fixed local time: 06:00 Berlin is 05:00 UTC in winter, 04:00 UTC in summer.
    ("0 6 * * *", "Europe/Berlin", utc(2026, 3, 27), utc(2026, 3, 31),
     ["03-27 05:00", "03-28 05:00", "03-29 04:00", "03-30 04:00"]),
    # Spring forward (02:00 -> 03:00 on 03-29): 02:30 does not exist, runs just after the jump.
    ("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28), utc(2026, 3, 31),
     ["03-28 01:30", "03-29 01:30", "03-30 00:30"]),
    # Fall back (03:00 -> 02:00 on 10-25): 02:30 happens twice, a fixed-time job runs once.
    ("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24), utc(2026, 10, 27),
     ["10-24 00:30", "10-25 00:30", "10-26 01:30"]),
    # Wildcard hours keep their real-time cadence through both transitions: no gap, no double.
    ("*/30 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0), utc(2026, 3, 29, 2, 30),
     ["03-29 00:00", "03-29 00:30", "03-29 01:00", "03-29 01:30", "03-29 02:00"]),
    ("0 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23), utc(2026, 10, 25, 3),
     ["10-24 23:00", "10-25 00:00", "10-25 01:00", "10-25 02:00"]),
    # US rules differ in date: 2026-03-08 02:00 -> 03:00 in New York.
    ("0 9 * * 1-5", "America/New_York", utc(2026, 3, 5), utc(2026, 3, 11),
     ["03-05 14:00", "03-06 14:00", "03-09 13:00", "03-10 13:00"]),
    ("15 10 1 * *", "UTC", utc(2026, 1, 1), utc(2026, 4, 1), ["01-01 10:15", "02-01 10:15", "03-01 10:15"]),
]  # fmt: skip


@pytest.mark.parametrize(("cron", "tz", "start", "end", "expected"), CRON_CASES)
def test_cron_times(
    cron: str, tz: str, start: datetime, end: datetime, expected: list[str]
) -> None:
    assert hm(schedule_times(Schedule(cron=cron, timezone=tz), start, end)) == expected


def test_limit_and_window_bounds() -> None:
    every_minute = Schedule(cron="* * * * *")
    times = schedule_times(every_minute, utc(2026, 1, 1), utc(2026, 1, 2), limit=5)
    assert hm(times) == [f"01-01 00:0{i}" for i in range(5)]
    assert schedule_times(every_minute, utc(2026, 1, 1), utc(2026, 1, 1)) == []


def test_interval_times_follow_the_anchor() -> None:
    schedule = Schedule(interval_seconds=3600, anchor_date=utc(2026, 1, 1, 0, 20))
    times = schedule_times(schedule, utc(2026, 5, 1, 10, 0), utc(2026, 5, 1, 13, 0))
    assert hm(times) == ["05-01 10:20", "05-01 11:20", "05-01 12:20"]
    default_anchor = Schedule(interval_seconds=900)
    assert hm(schedule_times(default_anchor, utc(2026, 5, 1, 10, 1), utc(2026, 5, 1, 10, 31))) == [
        "05-01 10:15",
        "05-01 10:30",
    ]


def test_bad_cron_and_timezone_name_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        check_schedule(Schedule(cron="61 * * * *"), "body.schedules.0")
    assert err.value.field == "body.schedules.0.cron"
    with pytest.raises(ValidationError) as err:
        check_schedule(Schedule(cron="0 6 * * *", timezone="Mars/Olympus"), "s")
    assert err.value.field == "s.timezone"


@pytest.fixture
def store(tmp_path: Path) -> Any:
    client = EmbeddedClient.from_url(f"sqlite:///{tmp_path / 'sched.db'}")
    yield client
    client.close()


def test_schedule_deployments_creates_runs_once(store: EmbeddedClient) -> None:
    schema = {"type": "object", "properties": {"region": {"type": "string", "default": "US"}}}
    flow = store.create_flow(Flow(name="daily", parameters_schema=schema))
    dep = store.create_deployment(
        DeploymentCreate(
            flow_id=flow.id,
            name="prod",
            runner="docker",
            parameters={"region": "EU"},
            job_variables={"env": {"A": "1"}},
            schedules=[
                Schedule(cron="0 * * * *"),
                Schedule(interval_seconds=1800, anchor_date=utc(2026, 1, 1)),  # shares :00
                Schedule(cron="5 * * * *", active=False),
            ],
        )
    )
    paused = store.create_deployment(
        DeploymentCreate(
            flow_id=flow.id, name="off", paused=True, schedules=[Schedule(cron="* * * * *")]
        )
    )
    at = utc(2026, 6, 1, 10, 10)
    lifecycle = store.lifecycle
    # The next two times of each active schedule: 11:00, 12:00 and 10:30, 11:00 (shared).
    created = schedule_deployments(lifecycle, at=at, runs_ahead=2)
    assert hm([r.expected_start_time for r in created]) == [  # type: ignore[misc]
        "06-01 10:30", "06-01 11:00", "06-01 12:00",
    ]  # fmt: skip
    run = created[0]
    assert run.deployment_id == dep.id and run.state and run.state.type == "SCHEDULED"
    assert run.idempotency_key == "scheduled:2026-06-01T10:30:00+00:00"
    assert run.parameters == {"region": "EU"} and run.runner == "docker" and run.mode == "batch"
    # the run's own job variables: the deployment's and the runner's are merged at claim time
    assert run.job_variables == {}
    assert "auto-scheduled" in run.tags

    # Passes again, later, and overlapping: no duplicates, only the new times.
    assert schedule_deployments(lifecycle, at=at, runs_ahead=2) == []
    later = schedule_deployments(lifecycle, at=at + timedelta(minutes=30), runs_ahead=2)
    assert hm([r.expected_start_time for r in later]) == ["06-01 11:30"]  # type: ignore[misc]
    assert store.count_flow_runs(FlowRunFilter(deployment_ids=[dep.id])) == 4
    assert store.count_flow_runs(FlowRunFilter(deployment_ids=[paused.id])) == 0


async def test_api_refuses_bad_schedules_and_drops_runs_of_old_schedules(
    api: Api, nbflow_app: NbflowApp
) -> None:
    _, flow = await api("POST", "flows", body={"name": "s"})
    base = {"flow_id": flow["id"], "name": "d", "notebook": make_notebook()}
    status, body = await api(
        "POST", "deployments", body={**base, "schedules": [{"cron": "0 25 * * *"}]}
    )
    assert status == 400 and body["errors"][0]["field"] == "body.schedules.0.cron"
    _, dep = await api("POST", "deployments", body={**base, "schedules": [{"cron": "0 * * * *"}]})
    loop = asyncio.get_running_loop()
    created = await loop.run_in_executor(
        None, lambda: schedule_deployments(nbflow_app.lifecycle, runs_ahead=1)
    )
    assert len(created) == 1
    _, manual = await api("POST", "deployments", dep["id"], "runs", body={})
    status, _ = await api(
        "PATCH", "deployments", dep["id"], body={"schedules": [{"cron": "30 * * * *"}]}
    )
    assert status == 200
    _, page = await api("GET", "flow_runs", params={"deployment_ids": dep["id"]})
    assert [r["id"] for r in page["items"]] == [manual["id"]]
    status, body = await api(
        "PATCH",
        "deployments",
        dep["id"],
        body={"schedules": [{"cron": "0 6 * * *", "timezone": "Nowhere/City"}]},
    )
    assert status == 400 and body["errors"][0]["field"] == "body.schedules.0.timezone"
