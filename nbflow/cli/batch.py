"""``nbflow batch NOTEBOOK --grid k=v1,v2 ...``: one run per parameter combination.

Every combination is validated before anything starts (a bad value stops the batch
with a message naming it).  At most ``--max-concurrency`` runs execute at once; a run that
fails does not stop the others.  At the end a table (or ``--json``) lists each run's
parameters, state, duration and output notebook; the exit code is 0 only when every
run completed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nbflow.cli import EXIT_FAILED, EXIT_OK, UsageError
from nbflow.cli._output import format_duration, print_table, short_id
from nbflow.cli.notebook_run import (
    NotebookRunSpec,
    add_notebook_options,
    create_notebook_run,
    launch,
    load_parameter_file,
    make_runner,
    parse_cli_parameters,
    parse_job_variables,
    prepare_notebook,
)
from nbflow.client import Client, get_client
from nbflow.exceptions import ValidationError
from nbflow.notebook import document as nbs
from nbflow.orchestration.job_variables import merge_job_variables
from nbflow.runners import Runner
from nbflow.schemas import FlowRun
from nbflow.states import Crashed

__all__ = ["BatchResult", "expand_grid", "register", "run_batch"]

#: Seconds each waiting slot is polled for an exit.
POLL_SECONDS = 0.1


def register(subparsers: Any) -> None:
    """Add the ``batch`` command."""
    parser = subparsers.add_parser(
        "batch",
        help="run a notebook once per combination of a parameter grid",
        description="Run NOTEBOOK once per combination of the --grid values (and the "
        "grid file), at most --max-concurrency at a time; one failure does not stop the "
        "others. Prints a summary table (or JSON) at the end.",
        epilog="example: nbflow batch report.ipynb --grid region=EU,US --grid n=1,2 "
        "--max-concurrency 2",
    )
    parser.add_argument("notebook", metavar="NOTEBOOK.ipynb", help="the notebook to run")
    parser.add_argument(
        "--grid",
        "-g",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a parameter and its values (comma-separated); repeat for several",
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter with the same value in every run",
    )
    parser.add_argument(
        "--max-concurrency",
        "-c",
        type=int,
        default=2,
        metavar="N",
        help="how many runs execute at once (default: 2)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_notebook_options(parser, detach=False)
    parser.set_defaults(handler=handle, prog="nbflow batch")


@dataclass
class BatchResult:
    """One run of a batch: its parameters and how it ended."""

    parameters: dict[str, Any]
    run: FlowRun
    duration: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """Return the machine-readable summary row."""
        state = self.run.state
        return {
            "run_id": str(self.run.id),
            "parameters": self.parameters,
            "state": state.name if state else None,
            "state_type": state.type.value if state else None,
            "message": state.message if state else None,
            "duration_seconds": round(self.duration, 3),
            "output_path": self.run.output_path,
        }


def expand_grid(
    spec: NotebookRunSpec, grid: Mapping[str, list[Any]], fixed: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Return one parameter mapping per combination of the grid's values (in order)."""
    names = list(grid)
    combos = itertools.product(*(grid[n] for n in names)) if names else [()]
    return [{**fixed, **dict(zip(names, values, strict=True))} for values in combos]


def _grid_from_args(spec: NotebookRunSpec, args: argparse.Namespace) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    if args.parameters_file:
        for name, values in load_parameter_file(args.parameters_file).items():
            grid[str(name)] = list(values) if isinstance(values, list) else [values]
    for item in args.grid:
        name, sep, text = item.partition("=")
        if not sep or not name or not text:
            raise UsageError(f"--grid {item!r}: expected KEY=V1,V2,...")
        values = [v.strip() for v in text.split(",")]
        grid[name.strip()] = [
            parse_cli_parameters(spec, [f"{name.strip()}={v}"])[name.strip()] for v in values
        ]
    return grid


def run_batch(
    client: Client,
    runner: Runner,
    spec: NotebookRunSpec,
    combinations: list[dict[str, Any]],
    *,
    max_concurrency: int,
    runner_name: str = "subprocess",
    job_variables: Mapping[str, Any] | None = None,
    progress: Any = None,
) -> list[BatchResult]:
    """Run every combination, at most ``max_concurrency`` at once; return them in order."""
    if max_concurrency < 1:
        raise UsageError(f"--max-concurrency={max_concurrency}: give at least 1")
    for params in combinations:  # validate every combination before creating any run
        try:
            nbs.validate_parameters(spec.schema, params)
        except ValidationError as exc:
            raise UsageError(f"combination {params}: {exc}") from exc
    runs = []
    for params in combinations:
        try:
            run = create_notebook_run(
                client, spec, params, runner=runner_name, job_variables=job_variables
            )
        except ValidationError as exc:
            raise UsageError(f"combination {params}: {exc}") from exc
        runs.append(BatchResult(params, run))
    waiting = deque(runs)
    active: dict[str, tuple[BatchResult, float]] = {}
    done = 0
    while waiting or active:
        while waiting and len(active) < max_concurrency:
            result = waiting.popleft()
            try:
                infra = launch(client, result.run, runner)
            except Exception as exc:  # one launch failure does not stop the others
                client.set_flow_run_state(result.run.id, Crashed(message=f"launch failed: {exc}"))
                result.run = client.read_flow_run(result.run.id)
                done += 1
                continue
            active[infra] = (result, time.monotonic())
        for infra in list(active):
            if runner.wait(infra, timeout=POLL_SECONDS / max(len(active), 1)) is None:
                continue
            result, started = active.pop(infra)
            result.duration = time.monotonic() - started
            result.run = client.read_flow_run(result.run.id)
            done += 1
        if progress is not None:
            progress(done, len(runs), len(active))
    return runs


def _progress_line(done: int, total: int, running: int) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\033[K{done}/{total} runs done, {running} running")
        sys.stderr.flush()


def handle(args: argparse.Namespace) -> int:
    """Run the batch and print the summary."""
    spec = prepare_notebook(args.notebook)
    fixed = parse_cli_parameters(spec, list(args.param))
    combinations = expand_grid(spec, _grid_from_args(spec, args), fixed)
    job_variables = merge_job_variables(
        {"stream_output": False}, parse_job_variables(list(args.job_variable))
    )
    pooled = args.runner == "subprocess" and not {"python", "virtualenv", "conda_env"} & set(
        job_variables
    )
    extra: dict[str, Any] = {}
    if pooled:  # one pre-started executor per slot, each used for exactly one run
        extra = {
            "prestart": max(1, min(args.max_concurrency, len(combinations))),
            "prestart_total": len(combinations),
            "output": _discard,
        }
    client = get_client()
    runner = make_runner(args.runner, client, **extra)
    try:
        results = _run(args, client, runner, spec, combinations, job_variables)
    finally:
        runner.close()
    return _report(args, results)


def _discard(line: str) -> None:
    """Drop a run's console output (its logs and output notebook keep what matters)."""


def _run(
    args: argparse.Namespace,
    client: Client,
    runner: Runner,
    spec: NotebookRunSpec,
    combinations: list[dict[str, Any]],
    job_variables: dict[str, Any],
) -> list[BatchResult]:
    return run_batch(
        client,
        runner,
        spec,
        combinations,
        max_concurrency=args.max_concurrency,
        runner_name=args.runner,
        job_variables=job_variables,
        progress=_progress_line,
    )


def _report(args: argparse.Namespace, results: list[BatchResult]) -> int:
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if args.json:
        json.dump([r.as_json() for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        rows = [
            [
                short_id(r.run.id),
                " ".join(f"{k}={v!r}" for k, v in r.parameters.items()) or "-",
                r.run.state.name if r.run.state else "-",
                format_duration(r.duration),
                r.run.output_path or "-",
            ]
            for r in results
        ]
        print_table(["run", "parameters", "state", "duration", "output notebook"], rows)
    ok = all(r.run.state is not None and r.run.state.is_final_success for r in results)
    return EXIT_OK if ok else EXIT_FAILED
