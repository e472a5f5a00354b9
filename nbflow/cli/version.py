"""``nbflow version``: versions and where runs are recorded."""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Any

from nbflow.cli._output import store_location
from nbflow.settings import get_settings

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``version`` command."""
    parser = subparsers.add_parser(
        "version",
        help="show versions and where runs are recorded",
        description="Show nbflow's and Python's versions and where runs are recorded.",
    )
    parser.set_defaults(handler=handle, prog=parser.prog)


def handle(args: argparse.Namespace) -> int:
    """Print the versions and the store location."""
    from nbflow import __version__

    settings = get_settings()
    print(f"nbflow:  {__version__}")
    print(f"Python:  {platform.python_version()} ({sys.executable})")
    print(f"home:    {settings.home}")
    print(f"store:   {store_location(settings)}")
    return 0
