"""``nbflow deployments ls|show|versions|diff|pause|resume|run|delete``: manage deployments.

A deployment is named by its id, a unique prefix of it, or its name (unique among
deployments, else ``FLOW/NAME``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from uuid import UUID

from nbflow.cli import UsageError
from nbflow.cli._output import format_time, print_table, short_id
from nbflow.cli.deploy import parse_deploy_parameters, print_changes, raise_as_usage, raw_pairs
from nbflow.cli.notebook_run import parse_job_variables
from nbflow.client.http import HTTPClient
from nbflow.exceptions import NotFound, ValidationError
from nbflow.notebook.deploy import describe_schedule, server_client
from nbflow.schemas import Deployment, DeploymentVersion, FieldChange, Flow

__all__ = ["register", "resolve_deployment"]

_PAGE = 1000


def register(subparsers: Any) -> None:
    """Add the ``deployments`` command group."""
    parser = subparsers.add_parser(
        "deployments",
        help="list, pause, resume, run and delete deployments on the server",
        description="Manage the deployments of the nbflow server (NBFLOW_API_URL). "
        "DEPLOYMENT is an id, a unique id prefix, a name, or FLOW/NAME.",
    )
    group = parser.add_subparsers(dest="deployments_command", metavar="<subcommand>", required=True)
    ls = group.add_parser("ls", help="list deployments", description="List deployments.")
    ls.add_argument("--flow", metavar="NAME", help="only deployments of this flow")
    ls.add_argument("--json", action="store_true", help="print them as a JSON list")
    ls.set_defaults(handler=handle_ls, prog=ls.prog)

    show = group.add_parser(
        "show",
        help="show a deployment: version, run mode, kernel, schedule, parameters",
        description="Show a deployment's definition as deployed now, with its version.",
    )
    show.add_argument("deployment", metavar="DEPLOYMENT")
    show.add_argument("--json", action="store_true", help="print it as JSON (no notebook)")
    show.set_defaults(handler=handle_show, prog=show.prog)

    versions = group.add_parser(
        "versions",
        help="list a deployment's versions: who changed what, when",
        description="List the versions of a deployment, newest first.",
    )
    versions.add_argument("deployment", metavar="DEPLOYMENT")
    versions.add_argument("--json", action="store_true", help="print them as a JSON list")
    versions.set_defaults(handler=handle_versions, prog=versions.prog)

    diff = group.add_parser(
        "diff",
        help="show what changed between two versions: fields and code cells",
        description="Show the fields and the code cells (unified diff) that differ from "
        "version N to version M; with N only, what version N changed from the one before.",
    )
    diff.add_argument("deployment", metavar="DEPLOYMENT")
    diff.add_argument("n", metavar="N", type=int, help="a version")
    diff.add_argument("m", metavar="M", type=int, nargs="?", help="another version")
    diff.add_argument("--json", action="store_true", help="print the diff as JSON")
    diff.set_defaults(handler=handle_diff, prog=diff.prog)

    for name, summary, handler in (
        ("pause", "pause a deployment: its schedules create no runs", handle_pause),
        ("resume", "resume a paused deployment", handle_resume),
        ("delete", "delete a deployment and its future scheduled runs", handle_delete),
    ):
        sub = group.add_parser(name, help=summary, description=summary[0].upper() + summary[1:])
        sub.add_argument("deployment", metavar="DEPLOYMENT")
        sub.set_defaults(handler=handler, prog=sub.prog)

    run = group.add_parser(
        "run",
        help="run a deployment now (the server's dispatcher starts it)",
        description="Create a run of the deployment now, with its parameters overridden by "
        "-p; prints the run id (follow it with: nbflow runs show ID).",
    )
    run.add_argument("deployment", metavar="DEPLOYMENT")
    run.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="a parameter"
    )
    run.add_argument(
        "--job-variable",
        "-j",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a runner job variable for this run; repeatable",
    )
    run.add_argument("--json", action="store_true", help="print the flow run as JSON")
    run.set_defaults(handler=handle_run, prog=run.prog)


def _all_deployments(client: HTTPClient, flow_id: UUID | None = None) -> list[Deployment]:
    found: list[Deployment] = []
    while True:
        page = client.read_deployments(flow_id=flow_id, limit=_PAGE, offset=len(found))
        found.extend(page)
        if len(page) < _PAGE:
            return found


def resolve_deployment(client: HTTPClient, text: str) -> Deployment:
    """Return the deployment named by an id, a unique id prefix, a name or ``FLOW/NAME``."""
    text = text.strip()
    try:
        return client.read_deployment(UUID(text))
    except ValueError:
        pass
    flow_name, slash, name = text.rpartition("/")
    if slash:
        try:
            flow = client.read_flow_by_name(flow_name)
        except NotFound:
            raise NotFound("deployment", text) from None
        matches = [d for d in _all_deployments(client, flow.id) if d.name == name]
    else:
        every = _all_deployments(client)
        matches = [d for d in every if d.name == text]
        if not matches:
            matches = [d for d in every if str(d.id).startswith(text.lower())]
    if not matches:
        raise NotFound("deployment", text)
    if len(matches) > 1:
        ids = ", ".join(f"{short_id(d.id)} ({d.name})" for d in matches[:5])
        raise UsageError(f"{text!r} matches several deployments: {ids}; give the id or FLOW/NAME")
    return matches[0]


def _schedule_text(deployment: Deployment) -> str:
    return "; ".join(describe_schedule(s) for s in deployment.schedules) or "-"


def handle_ls(args: argparse.Namespace) -> int:
    """List deployments."""
    client = server_client("nbflow deployments")
    flow_id = client.read_flow_by_name(args.flow).id if args.flow else None
    deployments = _all_deployments(client, flow_id)
    if args.json:
        docs = [d.model_dump(mode="json", exclude={"notebook"}) for d in deployments]
        json.dump(docs, sys.stdout, indent=2)
        print()
        return 0
    if not deployments:
        print(f"no deployments on {client.api_url}", file=sys.stderr)
        return 0
    flows: dict[UUID, Flow] = {}
    rows = []
    for d in deployments:
        if d.flow_id not in flows:
            flows[d.flow_id] = client.read_flow(d.flow_id)
        rows.append(
            [
                short_id(d.id),
                d.name,
                flows[d.flow_id].name,
                d.runner,
                _schedule_text(d),
                "paused" if d.paused else "active",
            ]
        )
    print_table(["ID", "NAME", "FLOW", "RUNNER", "SCHEDULE", "STATUS"], rows)
    return 0


def _set_paused(args: argparse.Namespace, paused: bool) -> int:
    client = server_client(f"nbflow deployments {args.deployments_command}")
    deployment = resolve_deployment(client, args.deployment)
    updated = client.update_deployment(deployment.id, paused=paused)
    print(f"deployment {updated.name!r} ({updated.id}) {'paused' if paused else 'resumed'}")
    return 0


def handle_pause(args: argparse.Namespace) -> int:
    """Pause a deployment."""
    return _set_paused(args, True)


def handle_resume(args: argparse.Namespace) -> int:
    """Resume a deployment."""
    return _set_paused(args, False)


def handle_delete(args: argparse.Namespace) -> int:
    """Delete a deployment."""
    client = server_client("nbflow deployments delete")
    deployment = resolve_deployment(client, args.deployment)
    client.delete_deployment(deployment.id)
    print(f"deployment {deployment.name!r} ({deployment.id}) deleted")
    return 0


def handle_run(args: argparse.Namespace) -> int:
    """Run a deployment now."""
    client = server_client("nbflow deployments run")
    deployment = resolve_deployment(client, args.deployment)
    flow = client.read_flow(deployment.flow_id)
    parameters = parse_deploy_parameters(flow.parameters_schema, args.param)
    try:
        run = client.run_deployment(
            deployment.id, parameters, job_variables=parse_job_variables(args.job_variable)
        )
    except ValidationError as exc:
        raise_as_usage(exc, raw_pairs("-p", args.param))
        raise
    if args.json:
        json.dump(run.model_dump(mode="json"), sys.stdout, indent=2)
        print()
        return 0
    print(f"flow run {run.name!r} of deployment {deployment.name!r} scheduled")
    print(f"  run id:  {run.id}")
    print(f"  inspect: nbflow runs show {short_id(run.id)}")
    return 0


def handle_show(args: argparse.Namespace) -> int:
    """Show one deployment."""
    client = server_client("nbflow deployments show")
    d = resolve_deployment(client, args.deployment)
    if args.json:
        json.dump(d.model_dump(mode="json", exclude={"notebook"}), sys.stdout, indent=2)
        print()
        return 0
    flow = client.read_flow(d.flow_id)
    rows = [
        ("deployment", f"{d.name} ({d.id})"),
        ("flow", flow.name),
        ("version", f"{d.version} (updated {format_time(d.updated)})"),
        ("status", "paused" if d.paused else "active"),
        ("schedule", _schedule_text(d)),
        ("run mode", _mode_text(d)),
        ("kernel", d.kernel_name or "the notebook's own kernelspec"),
        ("runner", d.runner),
    ]
    if "image" in d.job_variables:
        rows.append(("image", str(d.job_variables["image"])))
    if d.parameters:
        rows.append(
            ("parameters", ", ".join(f"{k}={json.dumps(v)}" for k, v in d.parameters.items()))
        )
    others = {k: v for k, v in d.job_variables.items() if k != "image"}
    if others:
        rows.append(("job variables", json.dumps(others)))
    if d.concurrency_limit is not None:
        rows.append(("concurrency", f"at most {d.concurrency_limit} at once"))
    if d.tags:
        rows.append(("tags", ", ".join(d.tags)))
    if d.description:
        rows.append(("description", d.description))
    for label, value in rows:
        print(f"{label + ':':<15}{value}")
    return 0


def _mode_text(d: Deployment) -> str:
    if d.run_mode == "file":
        return f"file (runs {d.notebook_path} as it is when a run starts)"
    source = f" of {d.notebook_path}" if d.notebook_path else ""
    return f"snapshot (runs the notebook{source} as deployed)"


def handle_versions(args: argparse.Namespace) -> int:
    """List a deployment's versions."""
    client = server_client("nbflow deployments versions")
    d = resolve_deployment(client, args.deployment)
    data = client.request(
        "GET", f"deployments/{d.id}/versions", kind="deployment", key=args.deployment
    )
    items = [DeploymentVersion.model_validate(v) for v in data["items"]]
    if args.json:
        json.dump([v.model_dump(mode="json") for v in items], sys.stdout, indent=2)
        print()
        return 0
    rows = [
        [
            str(v.version),
            format_time(v.created),
            v.author,
            v.summary,
            (v.notebook_sha256 or "-")[:8],
        ]
        for v in items
    ]
    print_table(["VERSION", "CREATED", "AUTHOR", "SUMMARY", "NOTEBOOK"], rows)
    return 0


def handle_diff(args: argparse.Namespace) -> int:
    """Show what differs between two versions of a deployment."""
    client = server_client("nbflow deployments diff")
    d = resolve_deployment(client, args.deployment)
    version, against = (args.n, None) if args.m is None else (args.m, args.n)
    params = {} if against is None else {"against": against}
    data = client.request(
        "GET",
        f"deployments/{d.id}/versions/{version}/diff",
        params=params,
        kind="deployment version",
        key=f"{args.deployment} v{version}",
    )
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        print()
        return 0
    changes = [FieldChange.model_validate(c) for c in data["changes"]]
    print(f"deployment {d.name!r}: version {data['against']} -> {data['version']}")
    if not changes:
        print("  no field changed")
    print_changes(changes)
    for cell in data["cells"]:
        sys.stdout.write(cell["diff"])
    return 0
