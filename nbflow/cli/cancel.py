"""``nbflow cancel RUN_ID``: cancel a flow run (an id or a unique prefix of one).

On a server the run is Cancelled at once when it has not started (Scheduled, Paused),
else Cancelling, which the server's monitors carry to Cancelled by stopping its
infrastructure.  In the embedded store there is no monitor: a run that has not started is
Cancelled, a started one is set Cancelling for its own process to notice.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nbflow.cli import EXIT_FAILED, EXIT_OK
from nbflow.cli._output import store_location
from nbflow.cli.runs import resolve_flow_run
from nbflow.client import get_client
from nbflow.client.http import HTTPClient
from nbflow.exceptions import ObjectAlreadyExists
from nbflow.schemas import OrchestrationResult, SetStateStatus
from nbflow.settings import get_settings
from nbflow.states import Cancelled, Cancelling, StateType

__all__ = ["register"]

_NOT_STARTED = (StateType.SCHEDULED, StateType.PAUSED)


def register(subparsers: Any) -> None:
    """Add the ``cancel`` command."""
    parser = subparsers.add_parser(
        "cancel",
        help="cancel a flow run",
        description="Cancel a flow run: Cancelled at once if it has not started, else "
        "Cancelling until its process is stopped. Exit 1 if the run already finished.",
    )
    parser.add_argument("run_id", metavar="ID", help="a flow run id, or a unique prefix of one")
    parser.set_defaults(handler=handle, prog=parser.prog)


def handle(args: argparse.Namespace) -> int:
    """Cancel the run."""
    client = get_client()
    run = resolve_flow_run(client, args.run_id)
    if run.state is not None and run.state.is_terminal:
        print(
            f"nbflow: error: flow run {run.id} already finished ({run.state.name})", file=sys.stderr
        )
        return EXIT_FAILED
    result: OrchestrationResult
    if isinstance(client, HTTPClient):
        try:
            result = client.cancel_flow_run(run.id)
        except ObjectAlreadyExists as exc:
            print(f"nbflow: error: flow run {run.id}: {exc}", file=sys.stderr)
            return EXIT_FAILED
    else:
        message = "cancelled with nbflow cancel"
        state = (
            Cancelled(message=message)
            if run.state_type in _NOT_STARTED
            else Cancelling(message=message)
        )
        result = client.set_flow_run_state(run.id, state)
    if result.status is not SetStateStatus.ACCEPT:
        reason = result.reason or "refused"
        print(
            f"nbflow: error: flow run {run.id}: cancel {result.status.value}: {reason}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    shown = result.state.name if result.state else "Cancelling"
    print(f"flow run {run.name!r} ({run.id}): {shown} in {store_location(get_settings())}")
    return EXIT_OK
