"""``nbflow runs prune --older-than 30d``: delete old finished runs with everything they own.

A run is pruned when it is terminal (Completed, Failed, Cancelled, Crashed), ended (or,
never started, was created) longer ago than ``--older-than``, and has no open child run;
its task runs, states, logs, artifacts, persisted results and the output notebook
``nbflow execute`` wrote go with it (:mod:`nbflow.engine.retention`).  Scheduled and
in-progress runs are never touched.

It deletes batch by batch (``--batch-size`` runs per transaction), printing the running
totals, so other writers — runs reporting, the server's API — wait at most one batch.
Without a server it prunes the embedded store and the files under ``NBFLOW_HOME``; with
one (``NBFLOW_API_URL``) it asks the server, one ``POST /flow_runs/prune`` per batch, and
the server deletes the files on its side.  It first counts what it would delete and asks
for confirmation (``--yes`` skips the question; ``--dry-run`` only counts).
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import timedelta
from typing import Any

from nbflow.cli import EXIT_OK, UsageError
from nbflow.cli._output import store_location
from nbflow.client import Client, get_client
from nbflow.settings import get_settings

__all__ = ["handle_prune", "parse_duration", "register"]

_UNITS = {"d": 86400, "h": 3600, "m": 60}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([dhm])\s*", re.IGNORECASE)
DEFAULT_BATCH_SIZE = 500


def parse_duration(text: str, *, option: str = "--older-than") -> timedelta:
    """Return ``30d``, ``12h`` or ``90m`` as a duration; UsageError naming ``option`` otherwise."""
    match = _DURATION.fullmatch(text)
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()] if match else 0.0
    if not seconds > 0:
        raise UsageError(
            f"{option} {text!r} is not a positive duration; give a number and a unit: "
            "30d (days), 12h (hours) or 90m (minutes)"
        )
    return timedelta(seconds=seconds)


def _batch_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number from 1 to 10000 (runs per transaction, e.g. 500)"
        )
    return value


def register(group: Any) -> None:
    """Add ``runs prune`` to the ``runs`` subcommands."""
    prune = group.add_parser(
        "prune",
        help="delete finished runs older than a duration, with their task runs, logs and files",
        description="Delete terminal flow runs (Completed, Failed, Cancelled, Crashed) that "
        "ended longer ago than --older-than, with their task runs, states, logs, artifacts, "
        "persisted results and the output notebooks nbflow wrote for them. Scheduled and "
        "in-progress runs, and runs with an open child run, are kept. Deletes in batches, "
        "printing progress; asks first unless --yes.",
        epilog="example: nbflow runs prune --older-than 30d --dry-run",
    )
    prune.add_argument(
        "--older-than",
        required=True,
        metavar="AGE",
        help="prune runs that ended longer ago than this: 30d, 12h or 90m",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="only count what would be deleted; delete nothing"
    )
    prune.add_argument(
        "--batch-size",
        type=_batch_size,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"runs deleted per transaction (default {DEFAULT_BATCH_SIZE})",
    )
    prune.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    prune.set_defaults(handler=handle_prune, prog=prune.prog)


class _Pruner:
    """One batch at a time, against the embedded store or the server."""

    def __init__(self, client: Client, older_than: timedelta, batch_size: int) -> None:
        from nbflow.client.http import HTTPClient

        self.http = client if isinstance(client, HTTPClient) else None
        self.client = client
        self.older_than = older_than
        self.batch_size = batch_size

    def batch(self, *, dry_run: bool) -> dict[str, Any]:
        """Prune one batch (dry run: count all); return the API's ``PruneResult`` fields."""
        if self.http is not None:
            body = {
                "older_than_seconds": self.older_than.total_seconds(),
                "batch_size": self.batch_size,
                "dry_run": dry_run,
            }
            result: dict[str, Any] = self.http.request(
                "POST", "flow_runs/prune", json=body, retry="connect"
            )
            return result
        from nbflow.client.embedded import EmbeddedClient
        from nbflow.engine.retention import prune_batch

        if not isinstance(self.client, EmbeddedClient):
            raise UsageError(f"pruning needs a server or the embedded store, not {self.client!r}")
        s = prune_batch(
            self.client.store,
            older_than=self.older_than,
            batch_size=self.batch_size,
            dry_run=dry_run,
        )
        c = s.counts
        return {
            "cutoff": s.cutoff.isoformat(),
            "runs": c.runs,
            "task_runs": c.task_runs,
            "logs": c.logs,
            "states": c.states,
            "artifacts": c.artifacts,
            "files": s.files,
            "more": s.more,
        }


_COUNTED = ("runs", "task_runs", "states", "logs", "artifacts", "files")


def _describe(totals: dict[str, int], *, verb: str) -> str:
    t = totals
    return (
        f"{verb} {t['runs']} flow runs, {t['task_runs']} task runs, {t['states']} states, "
        f"{t['logs']} log records, {t['artifacts']} artifacts"
        + (f" and {t['files']} files" if verb == "deleted" else "")
    )


def handle_prune(args: argparse.Namespace) -> int:
    """Count, confirm, then prune batch by batch with a progress line per batch."""
    older_than = parse_duration(args.older_than)
    pruner = _Pruner(get_client(), older_than, args.batch_size)
    where = store_location(get_settings())
    counted = pruner.batch(dry_run=True)
    print(
        f"{where}: {_describe(counted, verb='would delete')} "
        f"(runs that ended before {counted['cutoff']})",
        flush=True,
    )
    if args.dry_run or counted["runs"] == 0:
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("not deleting without confirmation: pass --yes (or try --dry-run)")
        answer = input(f"delete these {counted['runs']} flow runs? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return EXIT_OK
    totals = dict.fromkeys(_COUNTED, 0)
    while True:
        result = pruner.batch(dry_run=False)
        for key in _COUNTED:
            totals[key] += int(result[key])
        if result["runs"]:
            print(f"  {totals['runs']}/{counted['runs']} flow runs deleted", flush=True)
        if not result["more"]:
            break
    print(_describe(totals, verb="deleted"))
    return EXIT_OK
