"""The scheduler: keep the next few Scheduled runs of every deployment schedule created.

Each pass computes, per active schedule of every unpaused deployment, the schedule's next
``runs_ahead`` times (:func:`next_run_times`) and creates those not created yet, each with
the idempotency key ``scheduled:<UTC ISO time>``, through the run lifecycle
(:meth:`~nbflow.orchestration.lifecycle.FlowRunLifecycle.run_deployment`: the deployment's
parameters, validated; its job variables are merged when the run is claimed).  So an
every-minute schedule has ``runs_ahead`` runs waiting, never an hour of them, and a daily
one still has tomorrow's run.  The store returns the existing run for a key already used
(unique per deployment), so passes, restarts and several servers on one database never
duplicate a run; a run of that key that was cancelled or started is never created again.

The schedule preview (``/schedules/preview``) and the Upcoming list
(``/schedules/upcoming``) call :func:`next_run_times` too: what they show is what is run.

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

from croniter import CroniterBadDateError, croniter

from nbflow.exceptions import ValidationError
from nbflow.orchestration.lifecycle import AUTO_SCHEDULED_TAG, FlowRunLifecycle
from nbflow.orchestration.store import Store
from nbflow.schemas import Deployment, FlowRun, FlowRunFilter, Schedule
from nbflow.states import now
from nbflow_server.services.base import PeriodicService

__all__ = [
    "SCHEDULED_KEY_PREFIX",
    "SchedulerService",
    "check_schedule",
    "deployment_run_times",
    "next_run_times",
    "schedule_deployments",
    "schedule_times",
    "scheduled_key",
]

logger = logging.getLogger("nbflow.server.scheduler")

SCHEDULED_KEY_PREFIX = "scheduled:"
DEFAULT_ANCHOR = datetime(2020, 1, 1, tzinfo=UTC)
_PAGE = 200
#: Larger than any DST jump, so out-of-order localized cron times are still collected.
_SLACK = timedelta(hours=3)
#: How far :func:`next_run_times` looks: past it a schedule has no next run (Feb 30).
_FAR = timedelta(days=5 * 366)
#: Default of ``runs_ahead``: the runs of each schedule kept created ahead.
DEFAULT_RUNS_AHEAD = 3


def check_schedule(schedule: Schedule, field: str) -> None:
    """Raise ``ValidationError`` naming ``field`` for a bad cron expression or timezone."""
    try:
        ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"{field}.timezone",
            schedule.timezone,
            "is not a known time zone",
            "use an IANA name like 'Europe/Berlin' or 'UTC'",
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


def next_run_times(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """Return the first ``count`` UTC times of ``schedule`` at or after ``after``, ascending.

    The one definition of when a schedule runs: the scheduler creates these runs, the
    preview and the Upcoming list show them.
    """
    try:
        return schedule_times(schedule, after, after + _FAR, limit=count)
    except CroniterBadDateError:  # a cron that never matches, e.g. '0 0 30 2 *'
        return []


def deployment_run_times(deployment: Deployment, after: datetime, count: int) -> list[datetime]:
    """Return the next ``count`` times of each active schedule of ``deployment``, merged."""
    times: set[datetime] = set()
    for schedule in deployment.schedules:
        if schedule.active:
            times.update(next_run_times(schedule, after, count))
    return sorted(times)


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


def _used_keys(store: Store, deployment: Deployment, start: datetime) -> set[str | None]:
    """Keys of the deployment's runs expected at or after ``start``, in any state.

    A run cancelled or started early keeps its key: its time is never scheduled again.
    """
    keys: set[str | None] = set()
    offset = 0
    while True:
        page = store.read_flow_runs(
            FlowRunFilter(
                deployment_ids=[deployment.id],
                start_after=start,
                sort="expected_start_asc",
                limit=1000,
                offset=offset,
            )
        )
        keys.update(run.idempotency_key for run in page)
        if len(page) < 1000:
            return keys
        offset += 1000


def schedule_deployments(
    lifecycle: FlowRunLifecycle,
    *,
    at: datetime | None = None,
    runs_ahead: int = DEFAULT_RUNS_AHEAD,
) -> list[FlowRun]:
    """Create the missing runs of each schedule's next ``runs_ahead`` times; return them.

    ``at`` is the scheduler's clock (default: now).  A deployment whose runs the lifecycle
    refuses (its parameters no longer fit its flow) is skipped with a warning naming the
    problem; the others are still scheduled.
    """
    start = at or now()
    created: list[FlowRun] = []
    for deployment in _deployments(lifecycle.store):
        if deployment.paused:
            continue
        due = deployment_run_times(deployment, start, runs_ahead)
        if not due:
            continue
        used = _used_keys(lifecycle.store, deployment, start)
        for when in due:
            key = scheduled_key(when)
            if key in used:
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
        runs_ahead: int = DEFAULT_RUNS_AHEAD,
        on_created: Callable[[FlowRun], None] | None = None,
        clock: Callable[[], datetime] = now,
    ) -> None:
        super().__init__(interval)
        self.lifecycle = lifecycle
        self.runs_ahead = runs_ahead
        self.on_created = on_created
        #: The scheduler's time (tests move it to see the runs topped up).
        self.clock = clock

    async def tick(self) -> None:
        """Top up each schedule's next runs and announce the new ones."""
        loop = asyncio.get_running_loop()
        at = self.clock()
        created = await loop.run_in_executor(
            None,
            lambda: schedule_deployments(self.lifecycle, at=at, runs_ahead=self.runs_ahead),
        )
        if created:
            logger.info("scheduled %d run(s)", len(created))
        if self.on_created is not None:
            for run in created:
                self.on_created(run)
