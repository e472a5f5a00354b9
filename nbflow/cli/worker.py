"""``nbflow worker --runner docker|kubernetes``: the server's dispatcher, over its REST API.

The worker talks to the server given by ``NBFLOW_API_URL`` with ``NBFLOW_API_TOKEN`` (a
user's token) and runs :class:`nbflow.dispatch.Dispatcher`, the same class as the server's
dispatcher: it claims due runs of its runners within every concurrency limit
(``POST /flow_runs/claim``), submits them with their merged job variables and their own
run token, watches them, and stops the ones that become Cancelling (container stopped and
removed, Job and its pods and Secret deleted).  The server leaves those runs to workers
when the runner is not in ``NbflowApp.dispatch_runners``.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from typing import Any

from nbflow.cli import EXIT_OK, UsageError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``worker`` command."""
    parser = subparsers.add_parser(
        "worker",
        help="claim and run a server's due runs of some runners (docker, kubernetes, ...)",
        description="Poll the nbflow server (NBFLOW_API_URL, NBFLOW_API_TOKEN) for due "
        "runs of RUNNER within its concurrency limits, claim each exactly once, submit it, "
        "watch it and stop it when it is cancelled. Configure the server with "
        "NbflowApp.dispatch_runners without RUNNER so that its own dispatcher leaves these "
        "runs to workers.",
    )
    parser.add_argument(
        "--runner",
        required=True,
        action="append",
        help="a runner whose runs to take (docker, kubernetes, ...); repeat for several",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="most runs in flight at once (default: no limit)"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="seconds between two looks at its runs (cancels, exits) and the longest a claim "
        "waits at the server for a due run (2)",
    )
    parser.add_argument(
        "--no-long-poll",
        dest="long_poll",
        action="store_false",
        help="poll every --interval instead of holding each claim at the server until a run "
        "is due (for a server older than this worker)",
    )
    parser.add_argument(
        "--kill-grace",
        type=float,
        default=30.0,
        help="seconds a cancelled run's process gets to stop before it is killed (30)",
    )
    parser.add_argument(
        "--once", action="store_true", help="one pass, then wait for the submitted runs"
    )
    parser.set_defaults(handler=handle, prog=parser.prog)


def handle(args: argparse.Namespace) -> int:
    """Run the worker until interrupted (SIGINT/SIGTERM)."""
    from nbflow.client.http import MAX_CLAIM_WAIT, HTTPClient
    from nbflow.dispatch import Dispatcher, RunnerPool
    from nbflow.runners import Runner, get_runner
    from nbflow.schemas import FlowRun
    from nbflow.settings import get_settings

    settings = get_settings()
    if not settings.api_url:
        raise UsageError(
            "NBFLOW_API_URL is not set; a worker takes runs from a server: "
            "export NBFLOW_API_URL=http://HOST:PORT/nbflow/api/v1 and NBFLOW_API_TOKEN"
        )
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit={args.limit}: give at least 1")
    if args.interval <= 0:
        raise UsageError(f"--interval={args.interval}: give a positive number of seconds")
    if args.kill_grace < 0:
        raise UsageError(f"--kill-grace={args.kill_grace}: give 0 or more seconds")
    names = list(dict.fromkeys(args.runner))
    try:
        classes = {name: get_runner(name) for name in names}
    except Exception as exc:
        raise UsageError(str(exc)) from exc
    api_url = settings.api_url
    client = HTTPClient(api_url, token=settings.api_token)

    def token(run: FlowRun) -> str | None:
        # The claim brought the run's own token; mint one for a run claimed elsewhere.
        return dispatcher.token_for(run) or client.mint_run_token(run.id)

    def make(name: str) -> Runner:
        return classes[name](client=client, api_url=api_url, token_factory=token)

    label = ",".join(names)
    dispatcher = Dispatcher(
        client,
        RunnerPool(make),
        runner_names=names,
        claimer=f"worker {socket.gethostname()}/{label}",
        limit=args.limit,
        kill_grace=args.kill_grace,
        announce=lambda run: _say(_describe(run)),
        # A long poll: a due run is claimed within milliseconds, not at the next poll.
        claim_wait=min(args.interval, MAX_CLAIM_WAIT) if args.long_poll else 0.0,
    )
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    _say(
        f"worker {socket.gethostname()}: taking {label} runs from {api_url}"
        + (f" (at most {args.limit} at once)" if args.limit else "")
    )
    try:
        if args.once:
            dispatcher.run_once()
            dispatcher.wait_all()
        else:
            dispatcher.serve(stop, interval=args.interval)
    finally:
        dispatcher.close()
        dispatcher.runners.close()
        client.close()
    return EXIT_OK


def _describe(run: Any) -> str:
    state = run.state
    where = f" as {run.infrastructure_id}" if run.infrastructure_id else ""
    name = f"{state.name}" if state is not None else "-"
    message = f": {state.message}" if state is not None and state.message else ""
    return f"flow run {run.id} ({run.name}){where}: {name}{message}"


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
