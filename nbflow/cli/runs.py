"""``nbflow runs ls|show|output|diff``: list, inspect and compare runs, fetch output notebooks.

A run's output notebook is stored with the run: on the embedded store as the file the run
wrote (``output_path``), through a server as an artifact holding the notebook (a run in a
container sends it, since its disk goes away) or a file the server can read.  ``output``
fetches it from wherever the client's store keeps it, so the path a container wrote to
is never the answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from nbflow.cli import UsageError
from nbflow.cli._output import (
    format_duration,
    format_time,
    print_table,
    short_id,
    store_location,
)
from nbflow.client import Client, get_client
from nbflow.exceptions import FlowRunNotFound, NbflowError, NotFound
from nbflow.orchestration.diff import run_duration
from nbflow.schemas import FlowRun, FlowRunFilter, TaskRunFilter
from nbflow.settings import get_settings
from nbflow.states import DEFAULT_NAMES, StateType

__all__ = ["read_output_notebook", "register", "resolve_flow_run", "run_duration"]

_PAGE = 1000


def register(subparsers: Any) -> None:
    """Add the ``runs`` command group."""
    parser = subparsers.add_parser(
        "runs",
        help="list and inspect flow runs",
        description="List and inspect the flow runs recorded in the store.",
    )
    group = parser.add_subparsers(dest="runs_command", metavar="<subcommand>", required=True)

    ls = group.add_parser(
        "ls",
        help="list flow runs, newest first",
        description="List flow runs, newest first.",
    )
    ls.add_argument(
        "--state",
        action="append",
        default=[],
        metavar="STATE",
        help="only runs in this state: a type (failed, running, ...) or a name "
        "(Cached, TimedOut, Late, ...); repeat for several",
    )
    ls.add_argument(
        "--flow", action="append", default=[], metavar="NAME", help="only runs of this flow"
    )
    ls.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N", help="at most N runs (20)"
    )
    views = ls.add_mutually_exclusive_group()
    views.add_argument(
        "--history",
        dest="view",
        action="store_const",
        const="history",
        help="leave out the scheduled runs that are not due yet",
    )
    views.add_argument(
        "--upcoming",
        dest="view",
        action="store_const",
        const="upcoming",
        help="only the scheduled runs not due yet, soonest first",
    )
    ls.add_argument("--json", action="store_true", help="print the runs as a JSON list")
    ls.set_defaults(handler=handle_ls, prog=ls.prog)

    show = group.add_parser(
        "show",
        help="show one flow run: states, task runs, parameters, timings",
        description="Show one flow run: its states, task runs, parameters and timings.",
    )
    show.add_argument("run_id", metavar="ID", help="a flow run id, or a unique prefix of one")
    show.add_argument("--logs", action="store_true", help="also print the run's logs")
    show.add_argument("--json", action="store_true", help="print the run as JSON")
    show.set_defaults(handler=handle_show, prog=show.prog)

    output = group.add_parser(
        "output",
        help="fetch a run's output notebook from the store or server",
        description="Fetch the output notebook stored with a flow run (from the embedded "
        "store or the nbflow server, wherever the run executed) and write it to a file.",
    )
    output.add_argument("run_id", metavar="ID", help="a flow run id, or a unique prefix of one")
    output.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write it ('-': standard output; default: <run name>.ipynb here)",
    )
    output.add_argument("--force", action="store_true", help="overwrite FILE when it exists")
    output.set_defaults(handler=handle_output, prog=output.prog)

    # Imported here: runs_diff and runs_retry use this module's functions.
    from nbflow.cli import runs_diff, runs_prune, runs_retry

    runs_diff.register(group)
    runs_retry.register(group)
    runs_prune.register(group)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give 1 to 1000")
    return value


def _state_filter(states: list[str]) -> tuple[list[StateType] | None, list[str] | None]:
    """Split ``--state`` values into state types and state names."""
    names_by_lower = {name.lower(): name for name in _KNOWN_NAMES}
    types: list[StateType] = []
    names: list[str] = []
    for value in states:
        if value.upper() in StateType.__members__:
            types.append(StateType[value.upper()])
        elif value.lower() in names_by_lower:
            names.append(names_by_lower[value.lower()])
        else:
            types_text = ", ".join(t.value.lower() for t in StateType)
            names_text = ", ".join(
                n for n in _KNOWN_NAMES if n.upper() not in StateType.__members__
            )
            known = f"{types_text} (types) or {names_text} (names)"
            raise UsageError(f"--state {value!r} is not a state type or name; use one of: {known}")
    return types or None, names or None


_KNOWN_NAMES = sorted(
    set(DEFAULT_NAMES.values())
    | {"Late", "AwaitingRetry", "Retrying", "Cached", "TimedOut", "Submitting", "NotReady"}
)


def _state_label(run: FlowRun) -> str:
    return run.state.name if run.state else "-"


def handle_ls(args: argparse.Namespace) -> int:
    """List flow runs."""
    types, names = _state_filter(args.state)
    flt = FlowRunFilter(
        state_types=types,
        state_names=names,
        flow_names=args.flow or None,
        limit=args.limit,
        view=args.view,
    )
    runs = get_client().read_flow_runs(flt)
    if args.json:
        json.dump([run.model_dump(mode="json") for run in runs], sys.stdout, indent=2)
        print()
        return 0
    if not runs:
        print(f"no flow runs in {store_location(get_settings())}", file=sys.stderr)
        return 0
    upcoming = args.view == "upcoming"
    rows = [
        [
            short_id(run.id),
            run.name,
            run.flow_name or "-",
            _state_label(run),
            format_time(run.expected_start_time if upcoming else run.start_time),
            format_duration(run_duration(run)),
        ]
        for run in runs
    ]
    print_table(["ID", "NAME", "FLOW", "STATE", "DUE" if upcoming else "START", "DURATION"], rows)
    return 0


def resolve_flow_run(client: Client, text: str) -> FlowRun:
    """Return the flow run whose id is ``text`` or starts with it (unique prefix)."""
    text = text.strip().lower()
    try:
        return client.read_flow_run(UUID(text))
    except ValueError:
        pass
    if not text or any(c not in "0123456789abcdef-" for c in text):
        raise UsageError(f"{text!r} is not a flow run id; give an id or its first characters")
    matches: list[FlowRun] = []
    offset = 0
    while True:
        page = client.read_flow_runs(FlowRunFilter(limit=_PAGE, offset=offset))
        matches.extend(run for run in page if str(run.id).startswith(text))
        if len(page) < _PAGE or len(matches) > 1:
            break
        offset += _PAGE
    if not matches:
        raise FlowRunNotFound(text)
    if len(matches) > 1:
        ids = ", ".join(str(run.id) for run in matches[:5])
        raise UsageError(f"id prefix {text!r} matches several runs ({ids}); give more characters")
    return matches[0]


def retries_of(client: Client, run: FlowRun) -> list[FlowRun]:
    """Return the runs that retry ``run`` (``retry_of``), oldest first, among its flow's newest."""
    page = client.read_flow_runs(FlowRunFilter(flow_ids=[run.flow_id], limit=_PAGE))
    return sorted((r for r in page if r.retry_of == run.id), key=lambda r: r.created)


def children_of(client: Client, run: FlowRun) -> list[FlowRun]:
    """Return the child runs of a pipeline run (``run_notebook``), oldest first."""
    page = client.read_flow_runs(FlowRunFilter(parent_flow_run_ids=[run.id], limit=1000))
    return sorted(page, key=lambda r: r.created)


def _child_doc(child: FlowRun, task_names: dict[UUID, str]) -> dict[str, Any]:
    task = task_names.get(child.parent_task_run_id) if child.parent_task_run_id else None
    return {
        "id": str(child.id),
        "name": child.name,
        "flow_name": child.flow_name,
        "state": child.state.model_dump(mode="json") if child.state else None,
        "notebook_path": child.notebook_path,
        "parent_task_run_id": str(child.parent_task_run_id) if child.parent_task_run_id else None,
        "parent_task": task,
    }


def _effective_parameters(client: Client, run: FlowRun) -> dict[str, tuple[Any, bool]]:
    """Return the run's parameters with the flow's defaults for those it did not set."""
    values: dict[str, tuple[Any, bool]] = {k: (v, False) for k, v in run.parameters.items()}
    try:
        schema = client.read_flow(run.flow_id).parameters_schema
    except NbflowError:
        return values
    for name, prop in (schema.get("properties") or {}).items():
        if name not in values and isinstance(prop, dict) and "default" in prop:
            values[name] = (prop["default"], True)
    return values


def handle_show(args: argparse.Namespace) -> int:
    """Show one flow run."""
    client = get_client()
    run = resolve_flow_run(client, args.run_id)
    states = client.read_flow_run_states(run.id)
    task_runs = client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id], limit=100_000))
    children = children_of(client, run)
    task_names = {t.id: t.name for t in task_runs}
    if args.json:
        doc = run.model_dump(mode="json")
        doc["states"] = [s.model_dump(mode="json") for s in states]
        doc["task_runs"] = [t.model_dump(mode="json") for t in task_runs]
        doc["retried_by"] = [str(r.id) for r in retries_of(client, run)]
        doc["children"] = [_child_doc(child, task_names) for child in children]
        json.dump(doc, sys.stdout, indent=2)
        print()
        return 0

    print(f"Flow run {run.id}")
    print(f"  name:        {run.name}")
    print(f"  flow:        {run.flow_name or run.flow_id}")
    print(f"  state:       {_state_label(run)}")
    if run.state and run.state.message:
        print(f"  message:     {run.state.message}")
    print(f"  mode:        {run.mode}")
    print(f"  start:       {format_time(run.start_time)}")
    print(f"  end:         {format_time(run.end_time)}")
    print(f"  duration:    {format_duration(run_duration(run))}")
    print(f"  run count:   {run.run_count}")
    if run.retry_of is not None:
        print(f"  retry of:    {run.retry_of}")
    for retry in retries_of(client, run):
        print(f"  retried by:  {retry.id}")
    if run.parent_flow_run_id is not None:
        print(f"  parent:      {run.parent_flow_run_id}")
    if run.notebook_path:
        print(f"  notebook:    {run.notebook_path}")
    where = _output_description(client, run)
    if where:
        print(f"  output:      {where}")

    print("\nParameters")
    effective = _effective_parameters(client, run)
    if effective:
        for key, (value, is_default) in effective.items():
            note = "  (default)" if is_default else ""
            print(f"  {key} = {json.dumps(value, default=str)}{note}")
    else:
        print("  (none)")

    print("\nStates")
    print_table(
        ["  TIME", "STATE", "MESSAGE"],
        [
            [
                "  " + format_time(s.timestamp),
                s.name,
                (s.message or "").splitlines()[0] if s.message else "",
            ]
            for s in states
        ],
    )

    print(f"\nTask runs ({len(task_runs)})")
    if task_runs:
        cached = sum(1 for t in task_runs if t.state and t.state.name == "Cached")
        retried = sum(1 for t in task_runs if t.run_count > 1)
        rows = [
            [
                f"  {t.name}-{t.dynamic_key}",
                t.state.name if t.state else "-",
                format_time(t.start_time),
                format_duration(t.total_run_time if t.start_time else None),
                str(t.run_count),
                "yes" if t.state and t.state.name == "Cached" else "",
            ]
            for t in task_runs
        ]
        print_table(["  TASK", "STATE", "START", "DURATION", "RUNS", "CACHED"], rows)
        print(f"  {cached} cache hit(s), {retried} task run(s) retried")
    else:
        print("  (none)")

    if children:
        print(f"\nChild runs ({len(children)})")
        print_table(
            ["  ID", "FLOW", "STATE", "CALLED BY", "NOTEBOOK"],
            [
                [
                    f"  {c.id}",
                    c.flow_name or "-",
                    _state_label(c),
                    task_names.get(c.parent_task_run_id, "-") if c.parent_task_run_id else "-",
                    c.notebook_path or "-",
                ]
                for c in children
            ],
        )

    if args.logs:
        print("\nLogs")
        labels = {t.id: f"{t.name}-{t.dynamic_key}" for t in task_runs}
        cursor = 0
        while True:
            page = client.read_logs(run.id, cursor=cursor)
            for record in page.logs:
                where = labels.get(record.task_run_id, "flow") if record.task_run_id else "flow"
                level = logging.getLevelName(record.level)
                print(f"  {format_time(record.timestamp)}  {level:<7}  {where}  {record.message}")
            if not page.logs:
                break
            cursor = page.cursor
    return 0


# -- output notebooks ----------------------------------------------------------------------
def _output_description(client: Client, run: FlowRun) -> str | None:
    """Say where the run's output notebook is stored, as the reader of this CLI can reach it."""
    if not run.output_path:
        return None
    if Path(run.output_path).is_file():
        return run.output_path
    fetch = f"nbflow runs output {short_id(run.id)}"
    if _server_reader(client) is not None or _stored_notebook(client, run) is not None:
        return f"stored with the run — {fetch} (written at {run.output_path} where it ran)"
    return f"{run.output_path} (missing: the file was moved or deleted)"


def _server_reader(client: Client) -> Callable[[UUID], dict[str, Any]] | None:
    """The client's own way to fetch an output notebook (the HTTP client: the server's)."""
    return getattr(client, "read_output_notebook", None)


def _stored_notebook(client: Client, run: FlowRun) -> dict[str, Any] | None:
    """Return the notebook an embedded store holds for the run (artifact data or file)."""
    artifacts = [a for a in client.read_artifacts(flow_run_id=run.id) if a.kind == "notebook"]
    locations = [a.uri for a in reversed(artifacts) if a.uri]
    for artifact in reversed(artifacts):
        if artifact.data is not None and "cells" in artifact.data:
            return artifact.data
    for location in [*locations, run.output_path]:
        if location and "://" not in location.removeprefix("file://"):
            path = Path(location.removeprefix("file://"))
            if path.is_file():
                try:
                    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
                except (OSError, ValueError) as exc:
                    raise NbflowError(
                        f"the output notebook of flow run {run.id} at {path} cannot be read ({exc})"
                    ) from exc
    return None


def read_output_notebook(client: Client, run: FlowRun) -> dict[str, Any]:
    """Return the run's stored output notebook; raise NbflowError saying why there is none."""
    state = run.state
    if state is None or not state.is_terminal:
        label = state.name if state else "not started"
        raise NbflowError(
            f"flow run {run.id} is still {label}: its output notebook is stored when it ends; "
            f"follow it with 'nbflow runs show {short_id(run.id)}' and fetch it then"
        )
    notebook: dict[str, Any] | None
    reader = _server_reader(client)
    if reader is not None:
        try:
            notebook = reader(run.id)
        except NotFound:
            notebook = None
    else:
        notebook = _stored_notebook(client, run)
    if notebook is not None:
        return notebook
    if run.output_path and reader is None:
        raise NbflowError(
            f"the output notebook of flow run {run.id} was written to {run.output_path}, "
            "which is missing now (moved or deleted)"
        )
    if run.mode == "interactive":
        why = "it ran interactively: its outputs are in the notebook it ran in"
    elif not run.notebook_path and not run.deployment_id:
        why = "it is a Python flow run (only notebook runs have one)"
    else:
        why = f"it ended {state.name} before one was stored"
    raise NbflowError(f"flow run {run.id} has no output notebook: {why}")


def _default_file(run: FlowRun) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", run.name).strip(".-") or str(run.id)
    return Path(f"{name}.ipynb")


def handle_output(args: argparse.Namespace) -> int:
    """Fetch a run's output notebook and write it to a file or standard output."""
    client = get_client()
    run = resolve_flow_run(client, args.run_id)
    notebook = read_output_notebook(client, run)
    text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    target = Path(args.output) if args.output else _default_file(run)
    if target.exists() and not args.force:
        raise NbflowError(
            f"{target} exists; pass --force to overwrite it, or -o FILE to write elsewhere"
        )
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise NbflowError(f"cannot write the output notebook to {target}: {exc}") from exc
    partial = (notebook.get("metadata") or {}).get("nbflow", {}).get("partial")
    note = " (partial: the run stopped before every cell ran)" if partial else ""
    cells = len(notebook.get("cells") or [])
    print(f"wrote {target} ({cells} cells) from flow run {run.id}{note}", file=sys.stderr)
    return 0
