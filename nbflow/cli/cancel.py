"""``nbflow cancel RUN_ID``: cancel a flow run (an id or a unique prefix of one).

One cancel path (:meth:`nbflow.client.base.Client.cancel_flow_run`, the run lifecycle's):
a run that has not started (Scheduled, Late, AwaitingRetry, or claimed but not launched)
is Cancelled at once, on a server and in the embedded store alike; a started one becomes
Cancelling, and its owner (the server's dispatcher or monitors, ``nbflow worker``, the
executor, the kernel) stops it and records Cancelled.  A finished run is refused (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nbflow.cli import EXIT_FAILED, EXIT_OK
from nbflow.cli._output import store_location
from nbflow.cli.runs import resolve_flow_run
from nbflow.client import get_client
from nbflow.exceptions import TransitionRejected
from nbflow.settings import get_settings

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``cancel`` command."""
    parser = subparsers.add_parser(
        "cancel",
        help="cancel a flow run",
        description="Cancel a flow run: Cancelled at once if it has not started, else "
        "Cancelling until its process is stopped. Exit 1 if the run already finished.",
    )
    parser.add_argument("run_id", metavar="ID", help="a flow run id, or a unique prefix of one")
    parser.add_argument(
        "-m",
        "--message",
        default="cancelled with nbflow cancel",
        help="why, recorded on the run's Cancelled or Cancelling state",
    )
    parser.set_defaults(handler=handle, prog=parser.prog)


def handle(args: argparse.Namespace) -> int:
    """Cancel the run."""
    client = get_client()
    run = resolve_flow_run(client, args.run_id)
    try:
        result = client.cancel_flow_run(run.id, message=args.message)
    except TransitionRejected as exc:
        current = run.state.name if run.state is not None else "unknown"
        why = (
            f"already finished ({current})"
            if run.state is not None and run.state.is_terminal
            else exc.reason
        )
        print(f"nbflow: error: flow run {run.id} {why}", file=sys.stderr)
        return EXIT_FAILED
    shown = result.state.name if result.state else "Cancelling"
    print(f"flow run {run.name!r} ({run.id}): {shown} in {store_location(get_settings())}")
    return EXIT_OK
