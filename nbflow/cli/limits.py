"""``nbflow limits ls|set|rm``: concurrency limits per flow and per tag.

A limit caps the batch runs of a flow (``flow:<name>``) or with a tag (``tag:<tag>``) that
hold a slot at once (Pending, Running or Cancelling).  Every dispatcher (the server's,
``nbflow worker``) honours them inside the claim's transaction, together with the global
limit (``NbflowApp.global_concurrency_limit``) and each deployment's ``concurrency_limit``.
They live in the store the client talks to: the server's, or the embedded one.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nbflow.cli import EXIT_FAILED, EXIT_OK, UsageError
from nbflow.cli._output import print_table
from nbflow.client import get_client
from nbflow.exceptions import NotFound, ValidationError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``limits`` command."""
    parser = subparsers.add_parser(
        "limits",
        help="list, set and remove concurrency limits per flow or tag",
        description="Concurrency limits: at most N batch runs of a flow (flow:NAME) or with "
        "a tag (tag:TAG) run at once; the others wait, Scheduled, for a slot.",
    )
    sub = parser.add_subparsers(dest="limits_command", metavar="ls|set|rm", required=True)
    ls = sub.add_parser("ls", help="list the flow and tag limits")
    ls.set_defaults(handler=handle_ls, prog=ls.prog)
    set_ = sub.add_parser("set", help="create or change a limit")
    set_.add_argument("key", metavar="KEY", help="flow:<flow name> or tag:<tag>")
    set_.add_argument("limit", metavar="N", type=int, help="most runs at once (0 holds all)")
    set_.set_defaults(handler=handle_set, prog=set_.prog)
    rm = sub.add_parser("rm", help="remove a limit")
    rm.add_argument("key", metavar="KEY", help="flow:<flow name> or tag:<tag>")
    rm.set_defaults(handler=handle_rm, prog=rm.prog)


def handle_ls(args: argparse.Namespace) -> int:
    """Print the limits."""
    limits = get_client().read_concurrency_limits()
    if not limits:
        print("no flow or tag concurrency limits (nbflow limits set tag:gpu 2)")
        return EXIT_OK
    print_table(["KEY", "LIMIT"], [[x.key, str(x.limit)] for x in limits])
    return EXIT_OK


def handle_set(args: argparse.Namespace) -> int:
    """Create or change a limit."""
    try:
        limit = get_client().set_concurrency_limit(args.key, args.limit)
    except ValidationError as exc:
        raise UsageError(str(exc)) from exc
    print(f"{limit.key}: at most {limit.limit} run(s) at once")
    return EXIT_OK


def handle_rm(args: argparse.Namespace) -> int:
    """Remove a limit."""
    try:
        get_client().delete_concurrency_limit(args.key)
    except NotFound:
        print(f"nbflow: error: no concurrency limit {args.key!r}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.key}: no limit")
    return EXIT_OK
