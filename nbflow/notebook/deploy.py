"""Deploy a notebook to an nbflow server: shared by ``nbflow deploy`` and ``%nbflow deploy``.

A deployment needs a server (``NBFLOW_API_URL``): the embedded store has no scheduler or
dispatcher.  The notebook is uploaded (its JSON becomes the deployment's snapshot) or named
by a path relative to the server's root; the flow is registered from the notebook's
``%%flow`` cell (name and typed parameters schema, see :mod:`nbflow.notebook.document`).
Validation is left to the server where it can do it, so its messages (which name the field,
e.g. ``body.schedules.0.cron``) reach the user; :func:`option_of_field` maps those fields
back to the option that set them.
"""

from __future__ import annotations

import json
import sys
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from croniter import croniter

from nbflow.client.http import APIError, HTTPClient
from nbflow.exceptions import NbflowError
from nbflow.notebook import document as nbs
from nbflow.schemas import Deployment, DeploymentCreate, Flow, Schedule
from nbflow.settings import Settings, get_settings

__all__ = [
    "API_PREFIX",
    "DeploySpec",
    "NoServerError",
    "deploy_notebook",
    "describe_schedule",
    "next_run_times",
    "option_of_field",
    "print_deployment",
    "read_server_notebook",
    "server_client",
]

#: Where the nbflow API lives under a Jupyter server's base URL.
API_PREFIX = "/nbflow/api/v1"


class NoServerError(NbflowError):
    """Deploying (or running through the server) was asked for but no server is configured."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(
            f"{what} needs an nbflow server, and NBFLOW_API_URL is not set. Start one with "
            "`nbflow server --token TOKEN` (headless) or `jupyter lab`, then set "
            "NBFLOW_API_URL=http://127.0.0.1:8888/nbflow/api/v1 and NBFLOW_API_TOKEN=TOKEN"
        )


def server_client(what: str, settings: Settings | None = None) -> HTTPClient:
    """Return an HTTP client to the configured server, or raise :class:`NoServerError`."""
    s = settings or get_settings()
    if not s.api_url:
        raise NoServerError(what)
    return HTTPClient(s.api_url, token=s.api_token)


@dataclass(frozen=True)
class DeploySpec:
    """What to deploy, besides the notebook: the options of ``nbflow deploy``."""

    name: str
    cron: str | None = None
    timezone: str = "UTC"
    interval_seconds: float | None = None
    runner: str | None = None
    job_variables: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    paused: bool = False

    def schedules(self) -> list[Schedule]:
        """Return the deployment's schedules (none, one cron or one interval)."""
        if self.cron is not None and self.interval_seconds is not None:
            raise NbflowError("give either a cron schedule or an interval, not both")
        if self.cron is not None:
            return [Schedule(cron=self.cron, timezone=self.timezone)]
        if self.interval_seconds is not None:
            return [Schedule(interval_seconds=self.interval_seconds)]
        return []


def read_server_notebook(client: HTTPClient, path: str, token: str | None) -> dict[str, Any]:
    """Read a notebook under the server's root through Jupyter's contents API."""
    import httpx

    base = client.api_url.removesuffix(API_PREFIX)
    url = f"{base}/api/contents/{quote(path.lstrip('/'))}"
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        response = httpx.get(url, params={"type": "notebook", "content": "1"}, headers=headers)
    except httpx.TransportError as exc:
        raise APIError(0, "GET", url, f"cannot reach the server ({exc})") from exc
    if response.status_code == 404:
        raise nbs.NotebookFormatError(path, "no such notebook under the server's root")
    if response.status_code >= 400:
        raise APIError(response.status_code, "GET", url, response.text[:200])
    return nbs.load_notebook(response.json()["content"], source=path)


def notebook_flow(nb: Mapping[str, Any], path: str | Path) -> Flow:
    """Return the flow a notebook defines: the ``%%flow`` name (else the file stem) and schema."""
    return Flow(
        name=nbs.flow_name(nb, path),
        parameters_schema=nbs.notebook_parameters_schema(nb, source=str(path)),
        source=str(path),
    )


def deploy_notebook(
    client: HTTPClient,
    nb: Mapping[str, Any],
    spec: DeploySpec,
    *,
    path: str | Path,
    server_path: str | None = None,
) -> tuple[Flow, Deployment]:
    """Register the notebook's flow and create (or update) its deployment on the server.

    With ``server_path`` the server snapshots the notebook at that path (relative to its
    root); otherwise ``nb`` is uploaded.  ``path`` is only used for names and messages.
    """
    flow = client.create_flow(notebook_flow(nb, path))
    fields: dict[str, Any] = {
        "flow_id": flow.id,
        "name": spec.name,
        "parameters": dict(spec.parameters),
        "job_variables": dict(spec.job_variables),
        "schedules": spec.schedules(),
        "paused": spec.paused,
    }
    if spec.runner is not None:
        fields["runner"] = spec.runner
    if server_path is not None:
        fields["notebook_path"] = server_path
    else:
        fields["notebook"] = dict(nb)
    deployment = client.create_deployment(DeploymentCreate(**fields))
    return flow, deployment


def next_run_times(
    schedule: Schedule, count: int = 3, after: datetime | None = None
) -> list[datetime]:
    """Return the next ``count`` times a schedule fires after ``after`` (default: now).

    An approximation for display: the server's scheduler is the authority (it also
    resolves daylight-saving gaps and repeats).
    """
    start = after or datetime.now(UTC)
    if schedule.cron is not None:
        local = start.astimezone(zoneinfo.ZoneInfo(schedule.timezone))
        it = croniter(schedule.cron, local)
        return [it.get_next(datetime) for _ in range(count)]
    assert schedule.interval_seconds is not None
    anchor = schedule.anchor_date or datetime(2020, 1, 1, tzinfo=UTC)
    step = schedule.interval_seconds
    elapsed = (start - anchor).total_seconds()
    first = max(0, int(elapsed // step) + 1)
    return [anchor + timedelta(seconds=(first + i) * step) for i in range(count)]


def describe_schedule(schedule: Schedule) -> str:
    """Return a schedule in one phrase: ``cron '0 6 * * *' (Europe/Berlin)``, ``every 3600s``."""
    if schedule.cron is not None:
        return f"cron {schedule.cron!r} ({schedule.timezone})"
    return f"every {schedule.interval_seconds:g}s"


_OPTION_OF_FIELD = {
    "cron": "--cron",
    "timezone": "--timezone",
    "interval_seconds": "--interval",
    "anchor_date": "--interval",
}


def option_of_field(field_path: str) -> str | None:
    """Map a server error field (``body.schedules.0.cron``) to the option that set it."""
    parts = field_path.split(".")
    if parts[:2] == ["body", "schedules"] and len(parts) >= 4:
        return _OPTION_OF_FIELD.get(parts[3])
    if parts[:2] == ["body", "parameters"] and len(parts) >= 3:
        return f"-p {parts[2]}"
    if parts[:2] == ["body", "runner"]:
        return "--runner"
    if parts[:2] == ["body", "job_variables"]:
        return "--job-variable"
    if parts[:2] == ["body", "name"]:
        return "--name"
    return None


def print_deployment(flow: Flow, deployment: Deployment, *, file: Any = None) -> None:
    """Print a deployment's id, runner, schedule and next run times."""
    out = file or sys.stdout
    print(f"deployed {deployment.name!r} of flow {flow.name!r}", file=out)
    print(f"  deployment id: {deployment.id}", file=out)
    print(f"  runner:        {deployment.runner}", file=out)
    if deployment.parameters:
        params = ", ".join(f"{k}={json.dumps(v)}" for k, v in deployment.parameters.items())
        print(f"  parameters:    {params}", file=out)
    if not deployment.schedules:
        hint = f"nbflow deployments run {str(deployment.id)[:8]}"
        print(f"  schedule:      none (run it now with: {hint})", file=out)
    for schedule in deployment.schedules:
        print(f"  schedule:      {describe_schedule(schedule)}", file=out)
        if deployment.paused:
            print("  next runs:     none while paused (nbflow deployments resume)", file=out)
            continue
        times = ", ".join(t.strftime("%Y-%m-%d %H:%M %Z") for t in next_run_times(schedule))
        print(f"  next runs:     {times}", file=out)
