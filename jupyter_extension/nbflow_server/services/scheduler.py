"""The scheduler: create the Scheduled runs of deployments' schedules ahead of time.

Each pass looks ``horizon`` seconds ahead and creates, per active schedule of every
unpaused deployment, the runs due in that window (at most ``max_runs`` per deployment),
each with the idempotency key ``scheduled:<UTC ISO time>``, through the run lifecycle
(:meth:`~nbflow.orchestration.lifecycle.FlowRunLifecycle.run_deployment`: the deployment's
parameters, validated; its job variables are merged when the run is claimed).  The store
returns the existing run for a key already used, so passes, restarts and several servers
never duplicate a run.

Cron schedules follow wall-clock time in their timezone (croniter over local naive times,
localized with zoneinfo):

- a local time skipped by a spring-forward jump runs at the same offset from the jump's
  start, i.e. just after it (``30 2 * * *`` on a 02:00→03:00 day runs at 03:30);
- a local time that occurs twice at a fall-back runs once, at its first occurrence, unless
  the cron's hour field is a wildcard (``*/15 * * * *``): then, as cron daemons do, it runs
  in both occurrences so the job keeps its real-time cadence.

Interval schedules are exact elapsed seconds from ``anchor_date`` (default 2020-01-01 UTC).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from nbflow.exceptions import ValidationError
from nbflow.orchestration.lifecycle import AUTO_SCHEDULED_TAG, FlowRunLifecycle
from nbflow.orchestration.store import Store
from nbflow.schemas import Deployment, FlowRun, FlowRunFilter, Schedule
from nbflow.states import StateType, now
from nbflow_server.services.base import PeriodicService

__all__ = [
    "SCHEDULED_KEY_PREFIX",
    "SchedulerService",
    "check_schedule",
    "schedule_deployments",
    "schedule_times",
]

logger = logging.getLogger("nbflow.server.scheduler")

SCHEDULED_KEY_PREFIX = "scheduled:"
DEFAULT_ANCHOR = datetime(2020, 1, 1, tzinfo=UTC)
_PAGE = 200
#: Larger than any DST jump, so out-of-order localized cron times are still collected.
_SLACK = timedelta(hours=3)


def check_schedule(schedule: Schedule, field: str) -> None:
    """Raise ``ValidationError`` naming ``field`` for a bad cron expression or timezone."""
    try:
        ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"{field}.timezone",
            schedule.timezone,
            "is not a known IANA timezone",
            "use a name like 'Europe/Berlin' or 'UTC'",
        ) from None
    if schedule.cron is not None and not croniter.is_valid(schedule.cron):
        raise ValidationError(
            f"{field}.cron",
            schedule.cron,
            "is not a valid cron expression",
            "use five fields: minute hour day-of-month month day-of-week, e.g. '0 6 * * *'",
        )


def _localize(naive: datetime, zone: ZoneInfo) -> datetime:
    """Return the UTC instant of a local wall time (first occurrence; gaps shifted forward)."""
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _cron_times(schedule: Schedule, start: datetime) -> Iterator[datetime]:
    assert schedule.cron is not None
    zone = ZoneInfo(schedule.timezone)
    # Like cron daemons: in a repeated (fall-back) hour, a job with a wildcard hour field
    # runs in both occurrences; a job at a fixed hour runs once.
    every_hour = schedule.cron.split()[1].startswith("*")
    # Start a little earlier in wall time so a time shifted forward out of a gap is not missed.
    local_start = start.astimezone(zone).replace(tzinfo=None) - _SLACK
    iterator = croniter(schedule.cron, local_start)
    while True:
        naive = iterator.get_next(datetime)
        first = _localize(naive, zone)
        yield first
        second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
        if every_hour and second != first:
            yield second


def _interval_times(schedule: Schedule, start: datetime) -> Iterator[datetime]:
    assert schedule.interval_seconds is not None
    anchor = schedule.anchor_date or DEFAULT_ANCHOR
    if anchor.tzinfo is None:
        anchor = anchor.replace(tzinfo=ZoneInfo(schedule.timezone))
    step = timedelta(seconds=schedule.interval_seconds)
    n = max(0, math.ceil((start - anchor) / step))
    while True:
        yield anchor + n * step
        n += 1


def schedule_times(
    schedule: Schedule, start: datetime, end: datetime, *, limit: int = 100
) -> list[datetime]:
    """Return the UTC times of ``schedule`` in ``[start, end)``, at most ``limit``, ascending."""
    # Localized cron times are ascending except around a spring-forward gap, where a shifted
    # time can come out later than the next one; the disorder never exceeds _SLACK.
    found: set[datetime] = set()
    cutoff: datetime | None = None
    source = _cron_times if schedule.cron is not None else _interval_times
    for at in source(schedule, start):
        if at >= end + _SLACK or (cutoff is not None and at > cutoff):
            break
        if start <= at < end:
            found.add(at)
            if cutoff is None and len(found) >= limit:
                cutoff = max(found) + _SLACK
    return sorted(found)[:limit]


def scheduled_key(at: datetime) -> str:
    """Return the idempotency key of the scheduled run at ``at``."""
    return SCHEDULED_KEY_PREFIX + at.astimezone(UTC).isoformat()


def _deployments(store: Store) -> Iterator[Deployment]:
    offset = 0
    while True:
        page = store.read_deployments(limit=_PAGE, offset=offset)
        yield from page
        if len(page) < _PAGE:
            return
        offset += _PAGE


def schedule_deployments(
    lifecycle: FlowRunLifecycle,
    *,
    at: datetime | None = None,
    horizon: timedelta = timedelta(hours=1),
    max_runs: int = 100,
) -> list[FlowRun]:
    """Create the missing Scheduled runs due in ``[at, at + horizon)``; return the new ones.

    A deployment whose runs the lifecycle refuses (its parameters no longer fit its flow)
    is skipped with a warning naming the problem; the others are still scheduled.
    """
    start = at or now()
    end = start + horizon
    created: list[FlowRun] = []
    for deployment in _deployments(lifecycle.store):
        if deployment.paused:
            continue
        due: set[datetime] = set()
        for schedule in deployment.schedules:
            if schedule.active:
                due.update(schedule_times(schedule, start, end, limit=max_runs))
        if not due:
            continue
        existing = {
            run.idempotency_key
            for run in lifecycle.store.read_flow_runs(
                FlowRunFilter(
                    deployment_ids=[deployment.id],
                    start_after=start,
                    state_types=[StateType.SCHEDULED],
                    limit=1000,
                )
            )
        }
        for when in sorted(due)[:max_runs]:
            key = scheduled_key(when)
            if key in existing:
                continue
            try:
                run = lifecycle.run_deployment(
                    deployment,
                    scheduled_time=when,
                    message="auto-scheduled",
                    tags=[AUTO_SCHEDULED_TAG],
                    idempotency_key=key,
                )
            except ValidationError as exc:
                logger.warning(
                    "deployment %s (%s) not scheduled: %s", deployment.name, deployment.id, exc
                )
                break
            created.append(run)
    return created


class SchedulerService(PeriodicService):
    """Run :func:`schedule_deployments` every ``interval`` seconds, off the event loop."""

    name = "scheduler"

    def __init__(
        self,
        lifecycle: FlowRunLifecycle,
        *,
        interval: float,
        horizon: float,
        max_runs: int,
        on_created: Callable[[FlowRun], None] | None = None,
    ) -> None:
        super().__init__(interval)
        self.lifecycle = lifecycle
        self.horizon = timedelta(seconds=horizon)
        self.max_runs = max_runs
        self.on_created = on_created

    async def tick(self) -> None:
        """Create the runs due within the horizon and announce them."""
        loop = asyncio.get_running_loop()
        created = await loop.run_in_executor(
            None,
            lambda: schedule_deployments(
                self.lifecycle, horizon=self.horizon, max_runs=self.max_runs
            ),
        )
        if created:
            logger.info("scheduled %d run(s)", len(created))
        if self.on_created is not None:
            for run in created:
                self.on_created(run)
