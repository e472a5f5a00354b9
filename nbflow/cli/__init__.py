"""The ``nbflow`` command.

Each command group is one module in this package, listed in :data:`COMMANDS` with a
one-line summary.  A command module exposes ``register(subparsers)`` which adds its parser
and sets ``handler`` (``handler(args) -> int``) as a default.  Only the module of the
command being run is imported, so ``nbflow version`` stays instant and a command that needs
an optional extra fails only when it is used.  Later commands (``execute``, ``batch``,
``deploy``, ``server``, ``worker``, ``cancel``) are one module plus one row in
:data:`COMMANDS`.

Run from the console script (``argv=None``), a command that sets the default
``exit_without_teardown=True`` (``nbflow run``) ends the process with ``os._exit`` once
its output is flushed, ``atexit`` handlers have run and no non-daemon thread is left: the
interpreter's teardown only frees memory and costs a few hundred milliseconds.

Exit codes: 0 success; 1 a run that did not complete or an operation that failed;
2 a usage error (bad arguments, unknown flow, bad parameter).  Errors are one line on
stderr: ``nbflow: error: ...``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from nbflow.exceptions import NbflowError
from nbflow.parameters import skip_iri_format_grammar

__all__ = ["COMMANDS", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "UsageError", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: command name -> (module implementing it, one-line summary for ``nbflow --help``).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("nbflow.cli.run", "run a @flow from a Python file and record it"),
    "runs": ("nbflow.cli.runs", "list and inspect flow runs"),
    "version": ("nbflow.cli.version", "show versions and where runs are recorded"),
    "execute": ("nbflow.cli.execute", "execute a flow run's notebook (what runners launch)"),
    "batch": ("nbflow.cli.batch", "run a notebook once per combination of a parameter grid"),
    "server": ("nbflow.cli.server", "start a headless Jupyter server with only the nbflow API"),
    "worker": ("nbflow.cli.worker", "claim, run and stop a server's runs of some runners"),
    "limits": ("nbflow.cli.limits", "list, set and remove concurrency limits per flow or tag"),
    "deploy": ("nbflow.cli.deploy", "deploy a notebook to the server, optionally on a schedule"),
    "deployments": ("nbflow.cli.deployments", "list, pause, resume, run and delete deployments"),
    "cancel": ("nbflow.cli.cancel", "cancel a flow run"),
    "notify": ("nbflow.cli.notify", "add, list and remove notification rules (webhook or email)"),
}


class UsageError(NbflowError):
    """A command line that cannot be acted on: exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit with code 2."""

    def error(self, message: str) -> NoReturn:
        hint = f" (see '{self.prog} --help')"
        sys.stderr.write(f"nbflow: error: {message}{hint}\n")
        raise SystemExit(EXIT_USAGE)


def _command_of(argv: Sequence[str]) -> str | None:
    """Return the first positional argument: the command name, if any."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the parser, importing only the module of ``command`` (all stubs otherwise)."""
    from nbflow import __version__

    parser = _Parser(
        prog="nbflow",
        description="nbflow: Jupyter-native workflow orchestration.",
        epilog="Run 'nbflow <command> --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"nbflow {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="<command>", parser_class=_Parser, required=True
    )
    for name, (module_name, summary) in COMMANDS.items():
        if name == command:
            module = importlib.import_module(module_name)
            module.register(subparsers)
        else:
            # A stub: listed in --help, never parsed (the real parser is built when used).
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nbflow`` command line; return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(args_list)
    if command is not None and command not in COMMANDS:
        known = ", ".join(COMMANDS)
        sys.stderr.write(f"nbflow: error: unknown command {command!r}; the commands are: {known}\n")
        return EXIT_USAGE
    if command != "server":
        skip_iri_format_grammar()
    parser = build_parser(command)
    try:
        args, extras = parser.parse_known_args(args_list)
        if extras:
            # Report unknown options against the subcommand, whose --help lists the right ones.
            prog = getattr(args, "prog", None) or "nbflow"
            sys.stderr.write(
                f"nbflow: error: unrecognized arguments: {' '.join(extras)} (see '{prog} --help')\n"
            )
            return EXIT_USAGE
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code: int = args.handler(args)
    except UsageError as exc:
        sys.stderr.write(f"nbflow: error: {exc}\n")
        return EXIT_USAGE
    except NbflowError as exc:
        sys.stderr.write(f"nbflow: error: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("nbflow: interrupted\n")
        return 130
    except BrokenPipeError:
        # `nbflow runs ls | head`: the reader left; that is not an error.
        return EXIT_OK
    if argv is None and getattr(args, "exit_without_teardown", False):
        _exit_without_teardown(code)
    return code


def _exit_without_teardown(code: int) -> None:
    """End the process now with ``code`` (unless a non-daemon thread still runs).

    Everything a normal exit does that matters is done first: ``atexit`` handlers (user
    code may register some), logging handlers flushed and closed, stdio flushed.  Skipped:
    the interpreter's teardown (module and object finalization), which only frees memory.
    """
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
        return  # the normal exit waits for them
    import atexit

    atexit._run_exitfuncs()  # logging.shutdown() among them: handlers flushed and closed
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to flush
            pass
    os._exit(code)
