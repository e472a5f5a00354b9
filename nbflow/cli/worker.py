"""``nbflow worker --runner docker|kubernetes``: run a server's due runs on this machine.

The worker talks to the server given by ``NBFLOW_API_URL`` with ``NBFLOW_API_TOKEN``; it
claims due runs of deployments assigned to its runner exactly once through the
orchestration gate, submits them and watches them (see :mod:`nbflow.worker`).  The server
leaves those runs to workers when the runner is not in ``NbflowApp.dispatch_runners``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from nbflow.cli import EXIT_OK, UsageError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``worker`` command."""
    parser = subparsers.add_parser(
        "worker",
        help="claim and run a server's due runs of one runner (docker, kubernetes, ...)",
        description="Poll the nbflow server (NBFLOW_API_URL, NBFLOW_API_TOKEN) for due "
        "scheduled runs of deployments assigned to RUNNER, claim each exactly once, submit "
        "it and watch it. Configure the server with NbflowApp.dispatch_runners without "
        "RUNNER so that its own dispatcher leaves these runs to workers.",
    )
    parser.add_argument(
        "--runner", required=True, help="the runner whose runs to take (docker, kubernetes, ...)"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="most runs in flight at once (default: no limit)"
    )
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between two polls (2)")
    parser.add_argument(
        "--once", action="store_true", help="one pass, then wait for the submitted runs"
    )
    parser.set_defaults(handler=handle, prog=parser.prog)


def handle(args: argparse.Namespace) -> int:
    """Run the worker until interrupted (SIGINT/SIGTERM)."""
    from nbflow.client.http import HTTPClient
    from nbflow.runners import get_runner
    from nbflow.settings import get_settings
    from nbflow.worker import Worker, server_token_factory

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
    try:
        runner_cls = get_runner(args.runner)
    except Exception as exc:
        raise UsageError(str(exc)) from exc
    client = HTTPClient(settings.api_url, token=settings.api_token)
    tokens = server_token_factory(client)
    runner = runner_cls(client=client, api_url=settings.api_url, token_factory=tokens)

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    worker = Worker(client, runner, runner_name=args.runner, limit=args.limit, on_event=say)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    try:
        if args.once:
            worker.run_once()
            worker.wait_all()
        else:
            worker.serve(stop, interval=args.interval)
    finally:
        runner.close()
        client.close()
    return EXIT_OK
