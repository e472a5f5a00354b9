"""``nbflow execute RUN_ID``: execute a flow run's notebook (what runners launch).

The process starts the run's kernel first (jupyter_client only) and imports papermill
while it boots, so kernel start-up and imports overlap; the kernel is used for this one
run and never reused.  Exit code 0 when the run completed, was rescheduled by SIGTERM or
was refused by the orchestration gate (someone else owns it); 1 when it failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from nbflow.cli import UsageError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``execute`` command."""
    parser = subparsers.add_parser(
        "execute",
        help="execute a flow run's notebook with papermill (what runners launch)",
        description="Execute the notebook of an existing flow run with papermill, report "
        "every state, log and task run to the store or server, and store the output "
        "notebook. Runners launch this command; you rarely run it yourself.",
    )
    parser.add_argument("run_id", metavar="RUN_ID", nargs="?", help="the flow run's id")
    parser.add_argument(
        "--standby",
        action="store_true",
        help="start the kernel and load everything, then read the run from stdin as one "
        'JSON line {"flow_run_id": ..., "env": {...}, "cwd": ..., "quiet": false} (pooled '
        "executors)",
    )
    parser.add_argument(
        "--http",
        action="store_true",
        help="with --standby: prepare the HTTP client ahead (the run reports to a server)",
    )
    parser.add_argument(
        "--no-prestart",
        action="store_true",
        help="do not start the kernel before loading the run (slower, for debugging)",
    )
    parser.add_argument(
        "--no-fast-exit",
        dest="fast_exit",
        action="store_false",
        help="exit through the interpreter's normal teardown (for profilers, coverage)",
    )
    parser.set_defaults(handler=handle, prog="nbflow execute")


def _skip_slow_format_checkers() -> None:
    """Keep jsonschema from compiling its RFC 3987 grammar when nbformat loads (nbformat's
    notebook schema uses no IRI formats; see :func:`nbflow.parameters.skip_iri_format_grammar`)."""
    from nbflow.parameters import skip_iri_format_grammar

    skip_iri_format_grammar()


def _prestart_kernel() -> Any:
    """Start a python3 kernel now, without waiting for it; None if that is not possible."""
    try:
        from nbflow.execution.kernels import new_kernel_manager

        km = new_kernel_manager("python3")
        km.start_kernel()
    except Exception:
        return None
    return km


@dataclass(frozen=True)
class _StandbyJob:
    """The run a pooled executor was given, with what a cold start would have had."""

    run_id: str
    #: The run's connection (its own token) and its job variables' ``env``.
    env: dict[str, str]
    cwd: str | None
    #: ``stream_output`` off: output goes nowhere, as for a cold start.
    quiet: bool


def _read_standby_job() -> _StandbyJob | None:
    """Wait for the run on stdin; None when the runner closed the pipe (pool shut down)."""
    line = sys.stdin.readline()
    if not line.strip():
        return None
    try:
        job = json.loads(line)
        return _StandbyJob(
            str(job["flow_run_id"]),
            {str(k): str(v) for k, v in (job.get("env") or {}).items()},
            job.get("cwd") or None,
            bool(job.get("quiet")),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"standby: expected one JSON line with flow_run_id ({exc})") from exc


def _load_ahead(http: bool) -> Any:
    """Load now, while no run waits, what a run would load on its way; with ``http`` (the
    run reports to a server) return an HTTP transport for its client (else None).

    Only what a run needs anyway: the executor's modules and its client's (the embedded
    store's SQLAlchemy, or httpx and httpcore), the output summary's widgets (loaded at a
    run's end), nbformat's compiled validator of the current minor version (papermill
    validates the notebook it reads) and the transport: httpx builds its default TLS
    context (the CA bundle, 0.1-0.3 s) whenever a transport is made.
    """
    from nbflow.execution import executor  # noqa: F401
    from nbflow.notebook import summary  # noqa: F401  (ipywidgets)
    from nbflow.settings import get_settings

    if not http and not get_settings().uses_server:
        from nbflow.client import embedded  # noqa: F401  (SQLAlchemy: the bulk of the rest)
    try:
        import nbformat

        nbformat.writes(nbformat.v4.new_notebook())  # type: ignore[no-untyped-call]
    except Exception:  # a warm-up only: the run does it again if it must
        pass
    if not http:
        return None
    try:
        import httpcore  # noqa: F401  (httpx loads it with its first transport)
        import httpx

        from nbflow.client import http as http_client  # noqa: F401

        return httpx.HTTPTransport(retries=3)  # HTTPClient's default
    except Exception:
        return None


def _run_client(transport: Any, env: dict[str, str]) -> None:
    """Install the run's client, as ``get_client`` would build it, on the transport built
    ahead (unless the run's env changes TLS settings: then a new one)."""
    from nbflow.client import set_client
    from nbflow.client.http import HTTPClient
    from nbflow.settings import reload_settings

    settings = reload_settings()
    if not settings.uses_server or transport is None or any(k.startswith("SSL_") for k in env):
        set_client(None)  # get_client builds it on first use
        return
    set_client(HTTPClient(settings.api_url or "", token=settings.api_token, transport=transport))


def _connect_ahead(km: Any) -> Callable[[], Any]:
    """Connect to the kernel started ahead, in a thread, and wait until it answers.

    Returns a function that gives the client if it is ready by then, else None (it is
    then closed when ready, and the executor makes its own handshake): a job that comes
    before the kernel is up (``nbflow run``) does not wait for it here, so loading the run
    still overlaps the kernel's start.
    """
    if km is None:
        return lambda: None
    lock = threading.Lock()
    box: dict[str, Any] = {}

    def connect() -> None:
        kc = km.client()
        try:
            kc.start_channels()
            kc.wait_for_ready(timeout=60)
        except Exception:
            kc.stop_channels()
            return
        with lock:
            if box.get("taken"):
                kc.stop_channels()
            else:
                box["kc"] = kc

    def take() -> Any:
        with lock:
            box["taken"] = True
            return box.get("kc")

    threading.Thread(target=connect, name="nbflow-kernel-ahead", daemon=True).start()
    return take


def _silence_output() -> None:
    """Send this process's stdout and stderr to /dev/null (a cold start's DEVNULL)."""
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


def handle(args: argparse.Namespace) -> int:
    """Execute the run; return the exit code."""
    if args.standby == bool(args.run_id):
        raise UsageError("give either RUN_ID or --standby")
    km = None if args.no_prestart else _prestart_kernel()
    env: dict[str, str] = {}
    cwd: str | None = None
    kc = None
    run_text = args.run_id
    if args.standby:
        _skip_slow_format_checkers()
        transport = _load_ahead(args.http)
        ready_client = _connect_ahead(km)
        job = _read_standby_job()
        kc = ready_client()
        if job is None:
            if kc is not None:
                kc.stop_channels()
            if km is not None:
                km.shutdown_kernel(now=True)
            return 0
        run_text, env, cwd = job.run_id, job.env, job.cwd
        if job.quiet:
            _silence_output()
        os.environ.update(env)
        if cwd:
            os.chdir(cwd)
        _run_client(transport, env)
    try:
        run_id = UUID(run_text)
    except ValueError:
        raise UsageError(f"RUN_ID={run_text!r} is not a flow run id (a UUID)") from None
    _skip_slow_format_checkers()
    try:
        from nbflow.execution.executor import execute_flow_run
    except ImportError as exc:
        if km is not None:
            km.shutdown_kernel(now=True)
        raise UsageError(
            f"nbflow execute needs the notebook extra ({exc}); pip install 'nbflow[notebook]'"
        ) from exc
    result = execute_flow_run(
        run_id, kernel_manager=km, kernel_env=env, kernel_cwd=cwd, kernel_client=kc
    )
    state = result.state
    sys.stderr.write(f"nbflow: flow run {run_id}: {state if state else 'no state'}\n")
    if args.fast_exit:
        # Everything is in the store and the kernel is gone: skip the interpreter's
        # teardown (over a second under load), which only frees memory.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(result.exit_code)
    return result.exit_code
