"""Helpers of the JupyterLab panel: schedule previews and a notebook's ``%%flow`` parameters.

- ``GET /schedules/preview?cron=..&timezone=..&count=5`` (or ``interval_seconds=`` with an
  optional ``anchor_date=``) answers the next run times, so the schedule dialog shows them
  before anything is saved, and a bad cron or time zone is a 400 naming the field.
- ``GET /schedules/upcoming?count=5[&deployment_ids=..]`` answers the next run times of
  each deployment with an active schedule (the panel's Upcoming view).

Both compute the times with the scheduler's own :func:`next_run_times`, so what they show
is exactly when the scheduler's runs are due.
- ``GET /notebook_parameters?path=nb.ipynb`` answers the flow name, the typed parameters
  (JSON schema) and the schedule/runner options of the notebook's ``%%flow`` cell.
"""

from __future__ import annotations

import shlex
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from jupyter_core.utils import ensure_async
from pydantic import Field

from nbflow.exceptions import ValidationError
from nbflow.notebook.arguments import KNOWN_RUNNERS, parse_flow_line
from nbflow.notebook.document import (
    NotebookFormatError,
    find_flow_cell,
    flow_name,
    load_notebook,
    notebook_parameters_schema,
)
from nbflow.schemas import Deployment, Schedule
from nbflow.states import now
from nbflow_server.handlers.base import NbflowHandler, endpoint
from nbflow_server.handlers.models import _Body
from nbflow_server.paths import confine_path
from nbflow_server.services.scheduler import (
    check_schedule,
    deployment_run_times,
    next_run_times,
)

__all__ = ["NotebookParametersHandler", "SchedulePreviewHandler", "UpcomingRunsHandler"]


class SchedulePreviewQuery(_Body):
    """A cron (with time zone) or an interval to preview."""

    cron: str | None = None
    interval_seconds: float | None = Field(default=None, gt=0)
    timezone: str = "UTC"
    #: Start of an interval schedule's steps (default: the scheduler's, 2020-01-01 UTC).
    anchor_date: datetime | None = None
    count: int = Field(default=5, ge=1, le=50)
    #: Start of the preview, included (default: now).
    after: datetime | None = None


class SchedulePreview(_Body):
    """The next run times of a schedule, as aware datetimes in its time zone."""

    timezone: str
    next: list[datetime]


class UpcomingQuery(_Body):
    """Which deployments (default: all) and how many next times of each."""

    deployment_ids: list[uuid.UUID] | None = None
    count: int = Field(default=5, ge=1, le=50)
    #: Start of the listing, included (default: now).
    after: datetime | None = None


class UpcomingDeployment(_Body):
    """The next run times of one deployment's active schedules (UTC, soonest first)."""

    deployment_id: uuid.UUID
    deployment_name: str
    flow_id: uuid.UUID
    #: A paused deployment's times are listed but not created until it is resumed.
    paused: bool
    next: list[datetime]


class UpcomingRuns(_Body):
    """The deployments with an active schedule, by their next run time."""

    items: list[UpcomingDeployment]


class NotebookParametersQuery(_Body):
    """Which notebook to read."""

    path: str


class NotebookParameters(_Body):
    """What the ``%%flow`` cell of a notebook declares."""

    path: str
    flow_name: str
    has_flow_cell: bool
    parameters_schema: dict[str, Any]
    cron: str | None = None
    interval_seconds: float | None = None
    timezone: str = "UTC"
    runner: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)
    runners: list[str] = Field(default_factory=list)


def preview_schedule(query: SchedulePreviewQuery) -> Schedule:
    """Return the schedule ``query`` describes (ValidationError naming ``query.<field>``)."""
    if (query.cron is None) == (query.interval_seconds is None):
        raise ValidationError(
            "query.cron", query.cron, "give exactly one of cron or interval_seconds"
        )
    cron = query.cron.strip() if query.cron is not None else None
    if cron == "":
        raise ValidationError("query.cron", query.cron, "is empty", "give a cron expression")
    schedule = Schedule(
        cron=cron,
        interval_seconds=query.interval_seconds,
        timezone=query.timezone,
        anchor_date=query.anchor_date,
    )
    check_schedule(schedule, "query")
    return schedule


def next_times(query: SchedulePreviewQuery) -> list[datetime]:
    """Return the next ``count`` times the scheduler runs the schedule, in its time zone."""
    schedule = preview_schedule(query)
    zone = ZoneInfo(schedule.timezone)
    times = next_run_times(schedule, query.after or now(), query.count)
    if not times and schedule.cron is not None:
        raise ValidationError(
            "query.cron",
            query.cron,
            "matches no date in the next five years",
            "check the day of month against the month, e.g. February has no 30th",
        )
    return [t.astimezone(zone) for t in times]


class SchedulePreviewHandler(NbflowHandler):
    """``/schedules/preview``."""

    @endpoint(
        "read",
        "Preview the next run times of a cron (with time zone) or interval schedule, "
        "as the scheduler computes them",
        query=SchedulePreviewQuery,
        response=SchedulePreview,
    )
    async def get(self) -> None:
        query = self.parse_query(SchedulePreviewQuery)
        self.write_model(SchedulePreview(timezone=query.timezone, next=next_times(query)))


def upcoming(deployments: list[Deployment], after: datetime, count: int) -> UpcomingRuns:
    """List the next ``count`` run times of each deployment that has an active schedule."""
    items = [
        UpcomingDeployment(
            deployment_id=d.id,
            deployment_name=d.name,
            flow_id=d.flow_id,
            paused=d.paused,
            next=deployment_run_times(d, after, count)[:count],
        )
        for d in deployments
    ]
    items = [i for i in items if i.next]
    items.sort(key=lambda i: (i.next[0], i.deployment_name))
    return UpcomingRuns(items=items)


class UpcomingRunsHandler(NbflowHandler):
    """``/schedules/upcoming``."""

    @endpoint(
        "read",
        "The next run times of each deployment with an active schedule, as the scheduler "
        "creates them (paused ones included and marked)",
        query=UpcomingQuery,
        response=UpcomingRuns,
    )
    async def get(self) -> None:
        query = self.parse_query(UpcomingQuery)
        deployments = await self.call(self._deployments, query.deployment_ids)
        self.write_model(upcoming(deployments, query.after or now(), query.count))

    def _deployments(self, ids: list[uuid.UUID] | None) -> list[Deployment]:
        if ids is not None:
            return [self.client.read_deployment(i) for i in ids]
        found: list[Deployment] = []
        while True:
            page = self.client.read_deployments(limit=200, offset=len(found))
            found.extend(page)
            if len(page) < 200:
                return found


def read_flow_cell(nb: dict[str, Any], path: str) -> NotebookParameters:
    """Describe the ``%%flow`` cell (or papermill ``parameters`` cell) of a notebook."""
    try:
        flow_cell = find_flow_cell(nb, source=path)
        name = flow_name(nb, path)
        schema = notebook_parameters_schema(nb, source=path)
    except NotebookFormatError as exc:
        raise ValidationError("query.path", path, exc.problem) from None
    info = NotebookParameters(
        path=path,
        flow_name=name,
        has_flow_cell=flow_cell is not None,
        parameters_schema=schema,
        runners=list(KNOWN_RUNNERS),
    )
    if flow_cell is not None and flow_cell.name:
        line = " ".join(shlex.quote(a) for a in flow_cell.args)
        try:
            options = parse_flow_line(line)
        except ValidationError as exc:
            raise ValidationError(
                f"%%flow {exc.field}".replace("%%flow %%flow", "%%flow"),
                exc.value,
                exc.problem,
                exc.fix,
            ) from None
        info = info.model_copy(
            update={
                "cron": options.cron,
                "interval_seconds": options.interval_seconds,
                "timezone": options.timezone,
                "runner": options.runner,
                "job_variables": options.job_variables,
            }
        )
    return info


class NotebookParametersHandler(NbflowHandler):
    """``/notebook_parameters``."""

    @endpoint(
        "read",
        "The flow name, typed parameters and schedule options of a notebook's %%flow cell",
        query=NotebookParametersQuery,
        response=NotebookParameters,
    )
    async def get(self) -> None:
        query = self.parse_query(NotebookParametersQuery)
        path = confine_path(self.serverapp.root_dir, query.path, field="query.path")
        cm = self.serverapp.contents_manager
        if not await ensure_async(cm.file_exists(path)):  # type: ignore[no-untyped-call]
            raise ValidationError("query.path", path, "does not exist under the server root")
        model = await ensure_async(cm.get(path, content=True, type="notebook"))  # type: ignore[no-untyped-call]
        try:
            nb = load_notebook(dict(model["content"]), source=path)
        except NotebookFormatError as exc:
            raise ValidationError("query.path", path, exc.problem) from None
        self.write_model(read_flow_cell(nb, path))
