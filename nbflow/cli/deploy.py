"""``nbflow deploy NOTEBOOK --name NAME``: deploy a notebook to the server with a schedule.

Registers the flow of the notebook's ``%%flow`` cell, uploads the notebook (or names it by
its path under the server's root with ``--server-path``) and creates or updates the
deployment; prints its id and the next run times.  Bad values are refused by the server,
whose message names the field; it is shown against the option that set it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nbflow.cli import UsageError
from nbflow.cli.notebook_run import parse_job_variables
from nbflow.client.http import HTTPClient
from nbflow.exceptions import NotFound, ValidationError
from nbflow.notebook import document as nbs
from nbflow.notebook.arguments import parse_duration
from nbflow.notebook.deploy import (
    DeploySpec,
    deploy_notebook,
    notebook_flow,
    option_of_field,
    print_deployment,
    read_server_notebook,
    server_client,
)
from nbflow.schemas import Deployment, DeploymentVersionDetail, FieldChange
from nbflow.settings import get_settings

__all__ = [
    "format_change",
    "parse_deploy_parameters",
    "print_changes",
    "print_deployment",
    "raise_as_usage",
    "raw_pairs",
    "register",
]


def register(subparsers: Any) -> None:
    """Add the ``deploy`` command."""
    parser = subparsers.add_parser(
        "deploy",
        help="deploy a notebook to the nbflow server, optionally on a schedule",
        description="Deploy NOTEBOOK to the nbflow server (NBFLOW_API_URL, NBFLOW_API_TOKEN): "
        "register the flow of its %%flow cell, store a snapshot of the notebook and create "
        "or update the deployment NAME with its schedule. Prints the deployment id and "
        "the next run times.",
        epilog="example: nbflow deploy report.ipynb --name daily --cron '0 6 * * *' "
        "--timezone Europe/Berlin -p region=EU",
    )
    parser.add_argument("notebook", metavar="NOTEBOOK.ipynb", help="the notebook to deploy")
    parser.add_argument("--name", required=True, help="the deployment's name (unique per flow)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--cron", metavar="EXPR", help="a cron schedule, e.g. '0 6 * * *'")
    when.add_argument(
        "--interval",
        metavar="SECONDS",
        help="run every SECONDS (or a duration: 30m, 1h, 1d)",
    )
    parser.add_argument(
        "--timezone", default="UTC", metavar="TZ", help="IANA time zone of --cron (UTC)"
    )
    parser.add_argument(
        "--runner", default=None, help="the runner of its runs (default: the server's)"
    )
    parser.add_argument(
        "--job-variable",
        "-j",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a runner job variable (env.NAME=VALUE sets one variable); repeatable",
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a default parameter value of the deployment's runs; repeatable",
    )
    parser.add_argument("--paused", action="store_true", help="create it paused")
    parser.add_argument(
        "--server-path",
        action="store_true",
        help="NOTEBOOK is a path relative to the server's root: the server snapshots it "
        "(default: upload the local file)",
    )
    parser.add_argument("--json", action="store_true", help="print the deployment as JSON")
    parser.set_defaults(handler=handle, prog=parser.prog)


def parse_deploy_parameters(schema: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """Turn ``-p key=value`` pairs into values typed by the flow's parameters schema."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-p {pair!r}: expected KEY=VALUE")
        out[key.strip()] = nbs.coerce_parameter(schema, key.strip(), text)
    return out


def raise_as_usage(exc: ValidationError, values: dict[str, str]) -> None:
    """Re-raise a (server) validation error as a usage error naming the option and value."""
    option = option_of_field(exc.field) if exc.field else None
    if option is None:
        raise UsageError(str(exc)) from exc
    value = values.get(option)
    shown = f" {value!r}" if value is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    message = str(exc)
    # The server's message is "<field>=<value>: <problem>. <fix>": keep the problem and fix.
    detail = message[message.index(problem) :] if problem and problem in message else problem
    raise UsageError(f"{option}{shown}: {detail} (server field {exc.field})") from exc


def raw_pairs(option: str, pairs: list[str]) -> dict[str, str]:
    """Return ``{"-p key": "text"}`` for the ``-p key=text`` pairs (to quote them in errors)."""
    out = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        out[f"{option} {key.strip()}"] = text
    return out


def _interval(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text, "--interval").total_seconds()
    except ValidationError as exc:
        raise UsageError(f"--interval {text!r}: {exc.problem}; give seconds or 30m, 1h") from exc


def _load(client: HTTPClient, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """Return the notebook and the path it is named by."""
    if args.server_path:
        token = get_settings().api_token
        return read_server_notebook(client, args.notebook, token), args.notebook
    path = Path(args.notebook)
    if path.suffix != ".ipynb":
        raise UsageError(f"{args.notebook!r} is not a notebook (.ipynb)")
    return nbs.read_notebook(path), str(path)


def handle(args: argparse.Namespace) -> int:
    """Deploy the notebook."""
    client = server_client("nbflow deploy")
    try:
        nb, path = _load(client, args)
    except nbs.NotebookFormatError as exc:
        raise UsageError(str(exc)) from exc
    schema = nbs.notebook_parameters_schema(nb, source=path)
    spec = DeploySpec(
        name=args.name,
        cron=args.cron,
        timezone=args.timezone,
        interval_seconds=_interval(args.interval),
        runner=args.runner,
        job_variables=parse_job_variables(args.job_variable),
        parameters=parse_deploy_parameters(schema, args.param),
        paused=args.paused,
    )
    values = {
        "--cron": args.cron,
        "--timezone": args.timezone,
        "--interval": args.interval,
        "--runner": args.runner,
        "--name": args.name,
    }
    values.update(raw_pairs("-p", args.param))
    before = _existing(client, nb, path, args.name)
    try:
        flow, deployment = deploy_notebook(
            client, nb, spec, path=path, server_path=path if args.server_path else None
        )
    except ValidationError as exc:
        raise_as_usage(exc, {k: v for k, v in values.items() if v is not None})
        raise
    if args.json:
        doc = deployment.model_dump(mode="json", exclude={"notebook"})
        json.dump(doc, sys.stdout, indent=2)
        print()
        return 0
    print_deployment(flow, deployment)
    if before is not None:
        _print_update(client, before, deployment)
    return 0


def _existing(client: HTTPClient, nb: dict[str, Any], path: str, name: str) -> Deployment | None:
    """Return the deployment this deploy will update (None: it creates one)."""
    try:
        flow = client.read_flow_by_name(notebook_flow(nb, path).name)
    except NotFound:
        return None
    found = [d for d in client.read_deployments(flow_id=flow.id, limit=1000) if d.name == name]
    return found[0] if found else None


def _print_update(client: HTTPClient, before: Deployment, after: Deployment) -> None:
    if after.version == before.version:
        print(f"  version:       {after.version} (nothing changed)")
        return
    detail = DeploymentVersionDetail.model_validate(
        client.request(
            "GET",
            f"deployments/{after.id}/versions/{after.version}",
            kind="deployment version",
            key=after.version,
        )
    )
    print(f"  version:       {after.version} (was {before.version}), changed:")
    print_changes(detail.changes, indent="    ")


def format_change(change: FieldChange) -> str:
    """Return one changed field as ``field: old -> new`` (a notebook by its code cells)."""
    if change.field == "notebook":
        cells = (change.new or {}).get("code_cells") if isinstance(change.new, dict) else None
        shown = f"{cells} code cells" if cells is not None else "none"
        return f"notebook snapshot: new snapshot ({shown}; see nbflow deployments diff)"

    def text(value: Any) -> str:
        out = json.dumps(value, default=str, separators=(", ", ": "))
        return out if len(out) <= 80 else out[:77] + "..."

    return f"{change.field}: {text(change.old)} -> {text(change.new)}"


def print_changes(changes: list[FieldChange], *, indent: str = "  ") -> None:
    """Print each changed field on a line of its own."""
    for change in changes:
        print(f"{indent}{format_change(change)}")
