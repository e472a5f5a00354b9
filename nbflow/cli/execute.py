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
        'JSON line {"flow_run_id": ..., "env": {...}, "cwd": ...} (pooled executors)',
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
    """Keep jsonschema from compiling its RFC 3987 grammar (over 1 s) when nbformat loads.

    nbformat's notebook schema uses no IRI formats, so the checker is never needed here.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def _prestart_kernel() -> Any:
    """Start a python3 kernel now, without waiting for it; None if that is not possible."""
    try:
        from nbflow.execution.kernels import new_kernel_manager

        km = new_kernel_manager("python3")
        km.start_kernel()
    except Exception:
        return None
    return km


def _read_standby_job() -> tuple[str, dict[str, str], str | None] | None:
    """Wait for the run on stdin; None when the runner closed the pipe (pool shut down)."""
    line = sys.stdin.readline()
    if not line.strip():
        return None
    try:
        job = json.loads(line)
        return str(job["flow_run_id"]), dict(job.get("env") or {}), job.get("cwd")
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"standby: expected one JSON line with flow_run_id ({exc})") from exc


def handle(args: argparse.Namespace) -> int:
    """Execute the run; return the exit code."""
    if args.standby == bool(args.run_id):
        raise UsageError("give either RUN_ID or --standby")
    km = None if args.no_prestart else _prestart_kernel()
    env: dict[str, str] = {}
    cwd: str | None = None
    run_text = args.run_id
    if args.standby:
        _skip_slow_format_checkers()
        import nbflow.execution.executor
        from nbflow.settings import get_settings

        if not get_settings().uses_server:
            import nbflow.client.embedded  # noqa: F401  (SQLAlchemy: the bulk of the rest)

        job = _read_standby_job()
        if job is None:
            if km is not None:
                km.shutdown_kernel(now=True)
            return 0
        run_text, env, cwd = job
        os.environ.update(env)
        if cwd:
            os.chdir(cwd)
        from nbflow.client import set_client
        from nbflow.settings import reload_settings

        reload_settings()
        set_client(None)
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
    result = execute_flow_run(run_id, kernel_manager=km, kernel_env=env, kernel_cwd=cwd)
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
