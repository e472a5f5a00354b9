"""Plain-text output for the CLI: tables, times, durations and the store's location."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from nbflow.settings import Settings

__all__ = [
    "format_duration",
    "format_table",
    "format_time",
    "print_table",
    "short_id",
    "store_location",
]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Return rows as left-aligned columns under ``headers`` (no trailing spaces)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], file: TextIO | None = None
) -> None:
    """Print :func:`format_table` of the rows."""
    print(format_table(headers, rows), file=file or sys.stdout)


def format_time(moment: datetime | None) -> str:
    """Return a moment in local time to the second, or ``-``."""
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_duration(seconds: float | None) -> str:
    """Return a duration readable at a glance: ``850ms``, ``12.3s``, ``4m05s``, ``2h03m``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def short_id(run_id: object) -> str:
    """Return the first 8 characters of an id: enough to pass to ``runs show``."""
    return str(run_id)[:8]


_PASSWORD = re.compile(r"(://[^:/@]+:)[^@/]*@")


def store_location(settings: Settings) -> str:
    """Return where runs are recorded: the API URL, or the store URL without its password."""
    if settings.uses_server:
        return f"server {settings.api_url}"
    return _PASSWORD.sub(r"\1***@", settings.database_url)
