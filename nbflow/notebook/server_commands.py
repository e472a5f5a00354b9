"""The magics' server side: ``%nbflow deploy``, ``%nbflow run`` and ``%%flow --schedule``.

All three need a server (``NBFLOW_API_URL``; JupyterLab gives its kernels one).  The notebook
deployed or run is the one the frontend saved (``__session__`` / ``JPY_SESSION_NAME``), read
from disk, so unsaved edits are not included; a kernel that does not know its notebook's
path says so.  ``%nbflow run`` creates a Scheduled batch run that the server's dispatcher
starts: an ad-hoc run of the notebook's path under the server root when the server's
sessions API knows this kernel, else a run of the deployment made in this kernel.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from uuid import UUID

from IPython.core.error import UsageError

from nbflow.exceptions import NbflowError, ValidationError
from nbflow.notebook import document as nbs
from nbflow.notebook.arguments import FlowOptions, parse_duration
from nbflow.orchestration.job_variables import merge_job_variables
from nbflow.schemas import Deployment, Flow, FlowRun, FlowRunCreate
from nbflow.settings import get_settings
from nbflow.states import Scheduled

if TYPE_CHECKING:
    from nbflow.client.http import HTTPClient
    from nbflow.notebook.magics import NotebookSession

__all__ = ["ServerLink", "deploy_command", "deploy_from_flow_cell", "run_command"]

log = logging.getLogger("nbflow.notebook.magics")


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are IPython usage errors."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}\nusage: {self.format_usage().strip()[7:]}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError((message or self.format_help()).strip())


def _deploy_parser() -> _Parser:
    p = _Parser(prog="%nbflow deploy", add_help=False)
    p.add_argument("--name", help="deployment name (default: the notebook's file name)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--cron", "--schedule", dest="cron")
    when.add_argument("--interval")
    p.add_argument("--timezone")
    p.add_argument("--runner")
    p.add_argument("-p", "--param", action="append", default=[])
    p.add_argument("-j", "--job-variable", action="append", default=[])
    p.add_argument("--paused", action="store_true")
    return p


def _run_parser() -> _Parser:
    p = _Parser(prog="%nbflow run", add_help=False)
    p.add_argument("--runner")
    p.add_argument("-p", "--param", action="append", default=[])
    p.add_argument("-j", "--job-variable", action="append", default=[])
    return p


class ServerLink:
    """This kernel's link to an nbflow server: the client, and the deployment made here.

    ``%nbflow deploy`` and ``%%flow --schedule`` remember the deployment; ``%nbflow run``
    runs it when the server cannot tell which notebook this kernel belongs to.
    """

    def __init__(self) -> None:
        self.deployment_id: UUID | None = None

    def client(self, what: str) -> HTTPClient:
        """Return a client to the configured server; without one, say how to get one."""
        from nbflow.notebook.deploy import NoServerError, server_client

        try:
            return server_client(what)
        except NoServerError as exc:
            raise UsageError(str(exc)) from None


def _saved_notebook(session: NotebookSession, what: str) -> tuple[Path, dict[str, Any]]:
    path = session.kernel.path()
    if path is None:
        raise UsageError(
            f"{what}: this kernel does not know its notebook's path (no __session__ or "
            "JPY_SESSION_NAME; Jupyter sets them). Deploy from a terminal instead: "
            "nbflow deploy NOTEBOOK.ipynb --name NAME"
        )
    if not path.is_absolute() and not path.is_file():
        # Jupyter gives the path relative to its root, and starts the kernel in the
        # notebook's directory.
        path = Path.cwd() / path.name
    try:
        nb = nbs.read_notebook(path)
        nbs.find_flow_cell(nb, source=str(path))
        return path, nb
    except nbs.NotebookFormatError as exc:
        raise UsageError(f"{what}: {exc} (save the notebook first)") from None


def _pairs(pairs: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def _parameters(schema: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    return {k: nbs.coerce_parameter(schema, k, v) for k, v in _pairs(pairs, "-p").items()}


def _job_variables(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in _pairs(pairs, "-j").items():
        if key.startswith("env."):
            out.setdefault("env", {})[key[4:]] = value
        else:
            out[key] = json.loads(value) if value[:1] in "[{0123456789" else value
    return out


def _flow_line_options(nb: dict[str, Any], path: Path) -> FlowOptions | None:
    """Return the options of the saved notebook's ``%%flow`` line, if it has one."""
    from nbflow.notebook.arguments import parse_flow_line

    cell = nbs.find_flow_cell(nb, source=str(path))
    if cell is None or not cell.args:
        return None
    try:
        return parse_flow_line(shlex.join(cell.args))
    except ValidationError:
        return None


def _deploy(
    session: NotebookSession,
    client: HTTPClient,
    path: Path,
    nb: dict[str, Any],
    spec: Any,
    what: str,
) -> Deployment:
    from nbflow.notebook.deploy import deploy_notebook, print_deployment

    try:
        flow, deployment = deploy_notebook(client, nb, spec, path=path)
    except ValidationError as exc:
        raise UsageError(f"{what}: {exc}") from None
    except NbflowError as exc:
        raise UsageError(f"{what}: {exc}") from None
    session.server.deployment_id = deployment.id
    print_deployment(flow, deployment)
    return deployment


def deploy_command(session: NotebookSession, args: list[str]) -> Deployment:
    """``%nbflow deploy``: deploy the saved notebook; the %%flow line gives the defaults."""
    from nbflow.notebook.deploy import DeploySpec

    ns = _deploy_parser().parse_args(args)
    client = session.server.client("%nbflow deploy")
    path, nb = _saved_notebook(session, "%nbflow deploy")
    line = _flow_line_options(nb, path)
    cron = ns.cron if ns.cron is not None else (line.cron if line and not ns.interval else None)
    interval = parse_duration(ns.interval, "--interval").total_seconds() if ns.interval else None
    if interval is None and cron is None and line is not None:
        interval = line.interval_seconds
    schema = nbs.notebook_parameters_schema(nb, source=str(path))
    spec = DeploySpec(
        name=ns.name or path.stem,
        cron=cron,
        timezone=ns.timezone or (line.timezone if line else "UTC"),
        interval_seconds=interval,
        runner=ns.runner or (line.runner if line and line.runner != "subprocess" else None),
        job_variables=merge_job_variables(
            line.job_variables if line else None, _job_variables(ns.job_variable)
        ),
        parameters=_parameters(schema, ns.param),
        paused=ns.paused,
    )
    return _deploy(session, client, path, nb, spec, "%nbflow deploy")


def deploy_from_flow_cell(session: NotebookSession, opts: FlowOptions) -> None:
    """Create or update the deployment of a ``%%flow NAME --schedule ...`` cell.

    Without a server the schedule is kept for later and one line says so; inside a batch
    run (a runner executing the notebook) nothing is deployed.
    """
    from nbflow.notebook.deploy import DeploySpec, describe_schedule

    settings = get_settings()
    if settings.flow_run_id is not None or (opts.cron is None and opts.interval_seconds is None):
        return
    spec = DeploySpec(
        name=_default_deployment_name(session),
        cron=opts.cron,
        timezone=opts.timezone,
        interval_seconds=opts.interval_seconds,
        runner=opts.runner if opts.runner != "subprocess" else None,
        job_variables=dict(opts.job_variables),
    )
    if not settings.uses_server:
        schedule = describe_schedule(spec.schedules()[0])
        print(
            f"nbflow: the schedule ({schedule}) takes effect once the notebook is deployed to "
            "a server: %nbflow deploy (with NBFLOW_API_URL set) or nbflow deploy NOTEBOOK --name NAME"
        )
        return
    try:
        client = session.server.client("%%flow --schedule")
        path, nb = _saved_notebook(session, "%%flow --schedule")
        _deploy(session, client, path, nb, spec, "%%flow --schedule")
    except UsageError as exc:
        # The interactive run goes on; the schedule is not deployed, and the user is told why.
        print(f"nbflow: schedule not deployed: {exc}")


def _default_deployment_name(session: NotebookSession) -> str:
    path = session.kernel.path()
    return path.stem if path is not None else "notebook"


def _server_relative_path(client: HTTPClient, session: NotebookSession) -> str | None:
    """Return this kernel's notebook path under the server root, when it can be known.

    A relative ``__session__`` is already that path (jupyter_server's API path); otherwise
    the server's sessions API is asked which notebook this kernel belongs to.
    """
    import httpx

    given = session.kernel.path()
    if given is not None and not given.is_absolute():
        return given.as_posix()

    try:
        from ipykernel.connect import get_connection_file

        kernel_id = Path(get_connection_file()).stem.removeprefix("kernel-")
    except Exception:  # not an ipykernel, or no connection file: no way to ask
        return None
    from nbflow.notebook.deploy import API_PREFIX

    token = get_settings().api_token
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        response = httpx.get(
            client.api_url.removesuffix(API_PREFIX) + "/api/sessions", headers=headers
        )
        sessions = response.json() if response.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        return None
    for item in sessions:
        if (item.get("kernel") or {}).get("id") == kernel_id and item.get("path"):
            return str(item["path"])
    return None


def run_command(session: NotebookSession, args: list[str]) -> FlowRun:
    """``%nbflow run``: create a batch run of this notebook for the server's dispatcher."""
    ns = _run_parser().parse_args(args)
    client = session.server.client("%nbflow run")
    path, nb = _saved_notebook(session, "%nbflow run")
    schema = nbs.notebook_parameters_schema(nb, source=str(path))
    parameters = _parameters(schema, ns.param)
    job_variables = _job_variables(ns.job_variable)
    relative = _server_relative_path(client, session)
    try:
        if relative is not None:
            from nbflow.notebook.deploy import notebook_flow

            flow: Flow = client.create_flow(notebook_flow(nb, path))
            run = client.create_flow_run(
                FlowRunCreate(
                    flow_id=flow.id,
                    parameters=parameters,
                    state=Scheduled(message="started with %nbflow run"),
                    runner=ns.runner,
                    job_variables=job_variables,
                    notebook_path=relative,
                    mode="batch",
                    tags=["nbflow-run-magic"],
                )
            )
        elif session.server.deployment_id is not None:
            if ns.runner is not None:
                raise UsageError(
                    "%nbflow run --runner: a run of a deployment uses the deployment's runner; "
                    "redeploy with %nbflow deploy --runner R"
                )
            run = client.run_deployment(
                session.server.deployment_id, parameters, job_variables=job_variables
            )
        else:
            raise UsageError(
                "%nbflow run: the server does not know this kernel's notebook (no Jupyter "
                "session for it); deploy it first with %nbflow deploy, then %nbflow run "
                "runs that deployment"
            )
    except ValidationError as exc:
        raise UsageError(f"%nbflow run: {exc}") from None
    print(f"flow run {run.name!r} scheduled on {client.api_url} (the dispatcher starts it)")
    print(f"  run id:  {run.id}")
    print(f"  follow:  %nbflow show {str(run.id)[:8]}   or   nbflow runs show {str(run.id)[:8]}")
    return run
