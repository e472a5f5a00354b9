"""``nbflow run NOTEBOOK.ipynb``: run a notebook as a flow through a runner.

The flow run is created in the store (the embedded one by default) with the notebook's
path and the validated parameters, launched with a runner (``subprocess`` by default:
``python -m nbflow execute <id>``), and followed: a live line shows the task cells done
out of the total, the current cell and the elapsed time, polled from the store's task
runs.  At the end it prints the final state, the output notebook and the run id; the
exit code is 0 only when the run completed.  ``--detach`` returns right after launching.

A notebook without a ``%%flow`` cell runs as a one-task flow named after the file.
:func:`create_notebook_run` and :func:`follow_run` are shared with ``nbflow batch``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbflow.cli import EXIT_FAILED, EXIT_OK, UsageError
from nbflow.cli._output import format_duration
from nbflow.client import Client, get_client
from nbflow.exceptions import ValidationError
from nbflow.notebook import document as nbs
from nbflow.notebook.batch_runs import (
    NotebookRunSpec,
    create_notebook_run,
    launch,
    prepare_notebook,
)
from nbflow.runners import Runner, get_runner
from nbflow.schemas import FlowRun, TaskRunFilter
from nbflow.states import StateType

__all__ = [
    "NotebookRunSpec",
    "add_notebook_options",
    "create_notebook_run",
    "follow_run",
    "launch",
    "load_parameter_file",
    "prepare_notebook",
    "run_notebook",
]

#: Seconds between polls of the store while following a run.
POLL_SECONDS = 0.2


def add_notebook_options(parser: argparse.ArgumentParser, *, detach: bool = True) -> None:
    """Add the options of a notebook run (shared by ``run`` and ``batch``)."""
    parser.add_argument(
        "-f",
        "--parameters-file",
        metavar="FILE.yaml",
        help="a YAML or JSON file of parameters (command-line -p values win)",
    )
    parser.add_argument(
        "--runner",
        default="subprocess",
        help="the runner that executes the notebook (default: subprocess)",
    )
    if detach:
        parser.add_argument(
            "--detach",
            action="store_true",
            help="notebooks: return once the run is launched instead of following it",
        )
    parser.add_argument(
        "--job-variable",
        "-j",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a runner job variable (e.g. -j python=/usr/bin/python3); repeat for several",
    )


def load_parameter_file(path: str) -> dict[str, Any]:
    """Read a YAML (or JSON) mapping of parameters."""
    import yaml  # type: ignore[import-untyped,unused-ignore]

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"parameters file {path!r} does not exist") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"parameters file {path!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"parameters file {path!r} must hold a mapping of name: value")
    return data


def parse_cli_parameters(spec: NotebookRunSpec, pairs: list[str]) -> dict[str, Any]:
    """Turn ``-p key=value`` pairs into values typed by the notebook's parameters."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"-p {pair!r}: expected KEY=VALUE")
        out[key.strip()] = nbs.coerce_parameter(spec.schema, key.strip(), text)
    return out


def parse_job_variables(pairs: list[str]) -> dict[str, Any]:
    """Turn ``-j key=value`` pairs into job variables (``env.NAME=value`` sets one variable)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"-j {pair!r}: expected KEY=VALUE")
        if key.startswith("env."):
            out.setdefault("env", {})[key[4:]] = value
        elif value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
        else:
            out[key] = value
    return out


def follow_run(
    client: Client,
    run: FlowRun,
    runner: Runner,
    infrastructure_id: str,
    *,
    total_tasks: int,
    on_progress: Callable[[int, int, str, float], None] | None = None,
) -> FlowRun:
    """Poll the store until the run's process exits; report (done, total, current, elapsed)."""
    start = time.monotonic()
    while runner.wait(infrastructure_id, timeout=POLL_SECONDS) is None:
        if on_progress is not None:
            done, current = _task_progress(client, run)
            on_progress(done, max(total_tasks, done), current, time.monotonic() - start)
    return client.read_flow_run(run.id)


def _task_progress(client: Client, run: FlowRun) -> tuple[int, str]:
    task_runs = client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))
    done = sum(1 for t in task_runs if t.state is not None and t.state.is_terminal)
    running = [t.name for t in task_runs if t.state and t.state.type is StateType.RUNNING]
    return done, running[-1] if running else ""


class _ProgressLine:
    """A one-line progress bar on stderr, redrawn in place when it is a terminal."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = ""

    def __call__(self, done: int, total: int, current: str, elapsed: float) -> None:
        width = 20
        filled = int(width * done / total) if total else 0
        bar = "#" * filled + "." * (width - filled)
        text = f"[{bar}] {done}/{total} tasks  {format_duration(elapsed)}  {current}"
        if text == self._last:
            return
        self._last = text
        if self.live:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()

    def close(self) -> None:
        if self.live and self._last:
            self.stream.write("\n")
            self.stream.flush()


def make_runner(name: str, client: Client | None, **kwargs: Any) -> Runner:
    """Instantiate the named runner (an unknown name is a usage error listing the known)."""
    try:
        cls = get_runner(name)
    except ValidationError as exc:
        raise UsageError(str(exc)) from exc
    return cls(client=client, **kwargs)


def run_notebook(args: argparse.Namespace) -> int:
    """Handle ``nbflow run NOTEBOOK.ipynb``: create, launch, follow and report the run."""
    job_variables = parse_job_variables(list(getattr(args, "job_variable", [])))
    # Start the executor (and its kernel) now, while this process opens the store and
    # creates the run: the two start-ups overlap.
    fast = args.runner == "subprocess" and not {"python", "virtualenv", "conda_env"} & set(
        job_variables
    )
    runner = make_runner(args.runner, None, **({"prestart": 1, "replenish": False} if fast else {}))
    try:
        return _run_notebook(args, runner, job_variables)
    finally:
        runner.close()


def _run_notebook(args: argparse.Namespace, runner: Runner, job_variables: dict[str, Any]) -> int:
    spec = prepare_notebook(args.target)
    parameters: dict[str, Any] = {}
    if getattr(args, "parameters_file", None):
        parameters.update(load_parameter_file(args.parameters_file))
    if getattr(args, "params", None):
        try:
            parameters.update(json.loads(args.params))
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--params {args.params!r} is not a JSON object: {exc}") from exc
    parameters.update(parse_cli_parameters(spec, list(args.param)))
    client = get_client()
    runner.client = client
    try:
        run = create_notebook_run(
            client, spec, parameters, runner=args.runner, job_variables=job_variables
        )
    except ValidationError as exc:
        raise UsageError(str(exc)) from exc
    infrastructure_id = launch(client, run, runner)
    out = sys.stdout
    if getattr(args, "detach", False):
        out.write(f"flow run {run.id} launched ({args.runner} {infrastructure_id})\n")
        return EXIT_OK
    progress = _ProgressLine()
    try:
        final = follow_run(
            client,
            run,
            runner,
            infrastructure_id,
            total_tasks=spec.task_cells,
            on_progress=progress,
        )
    except KeyboardInterrupt:
        progress.close()
        runner.cancel(client.read_flow_run(run.id), grace_seconds=10)
        out.write(f"flow run {run.id} cancelled\n")
        return 130
    progress.close()
    state = final.state
    out.write(f"state:  {state if state else 'unknown'}\n")
    if final.output_path:
        out.write(f"output: {final.output_path}\n")
    out.write(f"run id: {final.id}\n")
    return EXIT_OK if state is not None and state.is_final_success else EXIT_FAILED
