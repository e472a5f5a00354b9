"""``nbflow server``: a headless Jupyter server running only the nbflow extension.

The server serves the REST API under ``/nbflow/api/v1`` and runs the service loops; it opens
no browser and loads no other server extension.  jupyter_server is imported only when the
command runs, and the extension is named, not imported, so ``nbflow`` never imports the
server extension package.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from nbflow.cli import UsageError

__all__ = ["build_server", "register"]

EXTENSION = "nbflow_server"


def register(subparsers: Any) -> None:
    """Add the ``server`` command."""
    parser = subparsers.add_parser(
        "server",
        help="start a headless Jupyter server with only the nbflow API and services",
        description=(
            "Start a Jupyter server with only the nbflow extension: the REST API under "
            "/nbflow/api/v1, the event stream and the scheduler/dispatcher/monitors. "
            "Clients reach it with NBFLOW_API_URL=http://IP:PORT/nbflow/api/v1 and "
            "NBFLOW_API_TOKEN=<token>."
        ),
    )
    parser.add_argument("--ip", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8888, help="port to listen on (8888)")
    parser.add_argument(
        "--token",
        default=None,
        help="the API token clients must send (default: a random one, printed at start-up; "
        "or set JUPYTER_TOKEN)",
    )
    parser.add_argument(
        "--root-dir",
        default=None,
        help="directory notebook paths are relative to and confined to (the current directory)",
    )
    parser.add_argument(
        "--db-url", default=None, help="SQLAlchemy URL of the store (NBFLOW_DATABASE_URL)"
    )
    parser.add_argument(
        "--no-services",
        action="store_true",
        help="serve the API only: no scheduler, dispatcher or monitors",
    )
    parser.add_argument(
        "--allow-root", action="store_true", help="allow running as root (containers)"
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="CLASS.TRAIT=VALUE",
        help="any traitlets option, e.g. --set NbflowApp.default_runner=docker (repeatable)",
    )
    parser.set_defaults(handler=handle, prog=parser.prog)


def _argv(args: argparse.Namespace) -> list[str]:
    """Translate the command's options into traitlets command-line options."""
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port={args.port}: not a TCP port; give 0..65535")
    root = os.path.abspath(args.root_dir or os.getcwd())
    if not os.path.isdir(root):
        raise UsageError(f"--root-dir={args.root_dir!r}: not a directory")
    argv = [
        f"--ServerApp.ip={args.ip}",
        f"--ServerApp.port={args.port}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        "--ServerApp.port_retries=0",
    ]
    if args.token is not None:
        argv.append(f"--IdentityProvider.token={args.token}")
    if args.db_url:
        argv.append(f"--NbflowApp.db_url={args.db_url}")
    if args.allow_root:
        argv.append("--ServerApp.allow_root=True")
    if args.no_services:
        argv.append("--NbflowApp.services_enabled=False")
    for setting in args.settings:
        name, sep, _ = setting.partition("=")
        if not sep or "." not in name or not name.replace(".", "").replace("_", "").isalnum():
            raise UsageError(
                f"--set {setting!r}: expected CLASS.TRAIT=VALUE, e.g. NbflowApp.default_runner=docker"
            )
        argv.append(f"--{setting}")
    return argv


def build_server(args: argparse.Namespace) -> Any:
    """Return an initialized (not started) ``ServerApp`` with only the nbflow extension."""
    from jupyter_server.serverapp import ServerApp

    argv = _argv(args)
    app = ServerApp.instance()
    app.jpserver_extensions = {EXTENSION: True}
    # find_extensions=False: extensions enabled in config files are not loaded.
    app.initialize(argv=argv, find_extensions=False)
    return app


def handle(args: argparse.Namespace) -> int:
    """Start the server and serve until interrupted."""
    app = build_server(args)
    app.start()
    return 0
