"""Helpers of the JupyterLab panel: a schedule preview and a notebook's ``%%flow`` parameters.

- ``GET /schedules/preview?cron=..&timezone=..&count=5`` (or ``interval_seconds=``) answers
  the next run times, so the schedule dialog shows them before anything is saved, and a bad
  cron or time zone is a 400 naming the field.
- ``GET /notebook_parameters?path=nb.ipynb`` answers the flow name, the typed parameters
  (JSON schema) and the schedule/runner options of the notebook's ``%%flow`` cell.
"""

from __future__ import annotations

import shlex
import zoneinfo
from datetime import datetime, timedelta
from typing import Any

from croniter import croniter
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
from nbflow.states import now
from nbflow_server.handlers.base import NbflowHandler, endpoint
from nbflow_server.handlers.models import _Body
from nbflow_server.paths import confine_path

__all__ = ["NotebookParametersHandler", "SchedulePreviewHandler"]


class SchedulePreviewQuery(_Body):
    """A cron (with time zone) or an interval to preview."""

    cron: str | None = None
    interval_seconds: float | None = Field(default=None, gt=0)
    timezone: str = "UTC"
    count: int = Field(default=5, ge=1, le=50)
    #: Start of the preview (default: now).
    after: datetime | None = None


class SchedulePreview(_Body):
    """The next run times of a schedule, as aware datetimes in its time zone."""

    timezone: str
    next: list[datetime]


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


def next_times(query: SchedulePreviewQuery) -> list[datetime]:
    """Return the next ``count`` times of a cron or interval schedule (ValidationError if bad)."""
    try:
        tz = zoneinfo.ZoneInfo(query.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            "query.timezone",
            query.timezone,
            "is not a known time zone",
            "use an IANA name like Europe/Berlin or UTC",
        ) from None
    if (query.cron is None) == (query.interval_seconds is None):
        raise ValidationError(
            "query.cron", query.cron, "give exactly one of cron or interval_seconds"
        )
    start = (query.after or now()).astimezone(tz)
    if query.interval_seconds is not None:
        step = timedelta(seconds=query.interval_seconds)
        return [start + step * (i + 1) for i in range(query.count)]
    cron = (query.cron or "").strip()
    if not cron or not croniter.is_valid(cron):
        raise ValidationError(
            "query.cron",
            query.cron,
            "is not a valid cron expression",
            "use five fields: minute hour day-of-month month day-of-week, e.g. '0 6 * * *'",
        )
    it = croniter(cron, start)
    return [it.get_next(datetime) for _ in range(query.count)]


class SchedulePreviewHandler(NbflowHandler):
    """``/schedules/preview``."""

    @endpoint(
        "read",
        "Preview the next run times of a cron (with time zone) or interval schedule",
        query=SchedulePreviewQuery,
        response=SchedulePreview,
    )
    async def get(self) -> None:
        query = self.parse_query(SchedulePreviewQuery)
        self.write_model(SchedulePreview(timezone=query.timezone, next=next_times(query)))


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
