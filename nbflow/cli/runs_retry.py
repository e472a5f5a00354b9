"""``nbflow runs retry RUN [--from-failed] [-p KEY=VALUE]``: a new run of a finished batch run.

The retry is the lifecycle's (:meth:`FlowRunLifecycle.retry_flow_run`): a new run linked
to the old one (``retry_of``), with the same parameters unless ``-p`` overrides them.
``--from-failed`` makes it a repair: the ``%%task`` cells that completed in the old run
with unchanged code and inputs are restored from their persisted outputs instead of
executed, so execution proper starts at the failed cell (plain cells run again).

Without a server the new run is executed here, as ``nbflow run NOTEBOOK`` does: claimed,
launched with its runner, followed with a progress line.  With one (``NBFLOW_API_URL``)
the server's dispatcher executes it; this command follows it until it ends.  Either way
the exit code is 0 only when the new run completed.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from nbflow.cli import EXIT_FAILED, EXIT_OK
from nbflow.cli._output import short_id
from nbflow.cli.notebook_run import _ProgressLine, follow_run, make_runner
from nbflow.cli.runs import resolve_flow_run
from nbflow.client import Client, get_client
from nbflow.exceptions import NbflowError
from nbflow.notebook import document as nbs
from nbflow.orchestration.job_variables import run_job_variables
from nbflow.schemas import FlowRun
from nbflow.settings import get_settings
from nbflow.states import Pending, StateType

__all__ = ["handle_retry", "register"]

#: Seconds between polls of a run the server executes.
FOLLOW_SECONDS = 0.5
EXIT_INTERRUPTED = 130


def register(group: Any) -> None:
    """Add ``runs retry`` to the ``runs`` subcommands."""
    retry = group.add_parser(
        "retry",
        help="run a finished batch run again as a new linked run (--from-failed: repair it)",
        description="Create a new run of a finished batch run (retry_of set, the same "
        "parameters unless -p overrides them) and execute it: here without a server, by "
        "the server's dispatcher with one; follow it until it ends. --from-failed restores "
        "the %%%%task cells the old run completed (unchanged code and inputs) instead of "
        "running them: execution starts at the failed cell; plain cells run again.",
        epilog="example: nbflow runs retry 3f2a --from-failed -p fail=false",
    )
    retry.add_argument("run_id", metavar="RUN", help="a flow run id, or a unique prefix of one")
    retry.add_argument(
        "--from-failed",
        action="store_true",
        help="repair: restore the task cells the run completed, execute from its failed cell",
    )
    retry.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a parameter (typed as the notebook declares it); repeat for several",
    )
    retry.add_argument(
        "--detach", action="store_true", help="return once the run is created (or launched)"
    )
    retry.set_defaults(handler=handle_retry, prog=retry.prog)


def _parameters(client: Client, old: FlowRun, pairs: list[str]) -> dict[str, Any]:
    """Return ``-p`` values typed by the flow's parameters (the lifecycle validates them)."""
    try:
        schema = client.read_flow(old.flow_id).parameters_schema
    except NbflowError:
        schema = {}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            from nbflow.cli import UsageError

            raise UsageError(f"-p {pair!r}: expected KEY=VALUE, e.g. -p n=3")
        out[key.strip()] = nbs.coerce_parameter(schema, key.strip(), text)
    return out


def handle_retry(args: argparse.Namespace) -> int:
    """Create the retry (or repair) and execute or follow it."""
    client = get_client()
    old = resolve_flow_run(client, args.run_id)
    parameters = _parameters(client, old, list(args.param))
    run = client.retry_flow_run(old.id, parameters=parameters, from_failed=args.from_failed)
    what = "repairs" if args.from_failed else "retries"
    print(f"flow run {run.id} {what} {old.id}", flush=True)
    if run.state is not None and run.state.message and args.from_failed:
        print(f"  {run.state.message}", flush=True)
    if get_settings().uses_server:
        if args.detach:
            return EXIT_OK
        return _report(_follow_server_run(client, run))
    final = _execute_here(client, run, old, detach=args.detach)
    return EXIT_OK if final is None else _report(final)


def _execute_here(client: Client, run: FlowRun, old: FlowRun, *, detach: bool) -> FlowRun | None:
    """Claim the new run and execute it with its runner, as ``nbflow run NOTEBOOK`` does."""
    deployment_variables = None
    if run.deployment_id is not None:
        deployment_variables = client.read_deployment(run.deployment_id).job_variables
    runner_name = run.runner or "subprocess"
    variables = run_job_variables(
        run, runner=runner_name, deployment_job_variables=deployment_variables
    )
    runner = make_runner(runner_name, client)
    try:
        result = client.set_flow_run_state(run.id, Pending(message="claimed by nbflow runs retry"))
        if result.state is None or result.state.type is not StateType.PENDING:
            raise NbflowError(f"flow run {run.id} could not be claimed: {result.reason}")
        run = client.read_flow_run(run.id)
        infrastructure_id = runner.submit(run, variables)
        client.update_flow_run(run.id, infrastructure_id=infrastructure_id)
        if detach:
            print(f"flow run {run.id} launched ({runner_name} {infrastructure_id})")
            return None
        progress = _ProgressLine()
        try:
            final = follow_run(
                client,
                run,
                runner,
                infrastructure_id,
                total_tasks=_task_count(run, old),
                on_progress=progress,
            )
        except KeyboardInterrupt:
            progress.close()
            runner.cancel(client.read_flow_run(run.id), grace_seconds=10)
            print(f"flow run {run.id} cancelled")
            raise
        progress.close()
        return final
    finally:
        runner.close()


def _task_count(run: FlowRun, old: FlowRun) -> int:
    """Return the number of ``%%task`` cells of the run's notebook (1: none, or unknown)."""
    try:
        return len(nbs.task_cells(nbs.read_notebook(run.notebook_path or ""))) or 1
    except Exception:
        return 1


def _follow_server_run(client: Client, run: FlowRun) -> FlowRun:
    """Poll a run the server's dispatcher executes until it ends, printing its states."""
    seen: str | None = None
    try:
        while True:
            current = client.read_flow_run(run.id)
            state = current.state
            label = state.name if state else "-"
            if label != seen:
                print(f"  {label}", flush=True)
                seen = label
            if state is not None and state.is_terminal:
                return current
            time.sleep(FOLLOW_SECONDS)
    except KeyboardInterrupt:
        print(
            f"stopped following; the run goes on: nbflow runs show {short_id(run.id)}",
            file=sys.stderr,
        )
        raise


def _report(final: FlowRun) -> int:
    state = final.state
    print(f"state:  {state if state else 'unknown'}")
    if final.output_path:
        print(f"output: {final.output_path}")
    print(f"run id: {final.id}")
    return EXIT_OK if state is not None and state.type is StateType.COMPLETED else EXIT_FAILED
