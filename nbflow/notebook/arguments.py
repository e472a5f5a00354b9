"""Parse and validate the options of ``%%flow`` and ``%%task`` and the parameters cell.

Everything here is pure: a bad option raises :class:`nbflow.exceptions.ValidationError`
naming the option, the value and the fix, before anything is registered or run.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shlex
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NoReturn

from croniter import croniter

from nbflow.exceptions import ValidationError
from nbflow.notebook import document as notebooks

__all__ = [
    "KNOWN_RUNNERS",
    "FlowOptions",
    "TaskOptionsSpec",
    "parse_duration",
    "parse_flow_line",
    "parse_flow_outputs",
    "parse_parameters",
    "parse_task_line",
]

#: Runners accepted until the runner registry lands (entry-point group ``nbflow.runners``).
KNOWN_RUNNERS = ("subprocess", "docker", "kubernetes")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,199}$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|w|d|h|m|s)?", re.IGNORECASE)
_UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


class _Parser(argparse.ArgumentParser):
    """An argparse parser that raises ValidationError instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise ValidationError(
            self.prog,
            None,
            message,
            f"usage: {self.format_usage().strip().removeprefix('usage: ')}",
        )

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise ValidationError(self.prog, None, (message or "invalid options").strip())


def _split(line: str, magic: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise ValidationError(
            magic, line, f"cannot split the options ({exc})", "close quotes"
        ) from exc


def _positive(option: str, text: str, allow_zero: bool = True) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0 or (value == 0 and not allow_zero):
        raise ValidationError(option, text, "not a positive number of seconds", "give e.g. 30")
    return value


def parse_duration(text: str, option: str = "--cache") -> timedelta:
    """Parse ``90``, ``45s``, ``30m``, ``2h``, ``1d``, ``1w`` or ``1h30m`` into a timedelta."""
    compact = text.replace(" ", "")
    pos, total = 0, 0.0
    while pos < len(compact):
        match = _DURATION.match(compact, pos)
        if not match or match.end() == pos:
            raise ValidationError(
                option, text, "not a duration", "use seconds or 45s, 30m, 2h, 1d, 1w, 1h30m"
            )
        total += float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
        pos = match.end()
    if not compact or total <= 0:
        raise ValidationError(option, text, "not a positive duration", "give e.g. 1d or 3600")
    return timedelta(seconds=total)


# --------------------------------------------------------------------------- %%flow


@dataclass(frozen=True)
class FlowOptions:
    """The validated options of a ``%%flow`` line."""

    name: str
    cron: str | None = None
    timezone: str = "UTC"
    interval_seconds: float | None = None
    runner: str = "subprocess"
    job_variables: dict[str, Any] = field(default_factory=dict)
    #: The variables a run of this notebook hands to the flow that ran it (``run_notebook``).
    outputs: tuple[str, ...] = ()


def _flow_parser() -> _Parser:
    p = _Parser(prog="%%flow", add_help=False)
    p.add_argument("name")
    p.add_argument("--schedule", dest="cron", help="cron expression, e.g. '0 6 * * *'")
    p.add_argument("--timezone", default="UTC", help="IANA time zone of the cron schedule")
    p.add_argument("--interval", type=str, help="run every SECONDS (or 30m, 1h)")
    p.add_argument("--runner", default="subprocess", help=f"one of {', '.join(KNOWN_RUNNERS)}")
    p.add_argument("--outputs", action="append", default=[], help="variables a caller gets")
    return p


def _literal(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_flow_line(line: str, runners: tuple[str, ...] = KNOWN_RUNNERS) -> FlowOptions:
    """Validate a ``%%flow NAME [--schedule CRON] [--timezone TZ] ...`` line.

    Options the parser does not know (``--image python:3.12``) become the runner's job
    variables; their values are read as JSON when they parse (``--cpu 2`` gives ``2``).
    """
    parser = _flow_parser()
    ns, rest = parser.parse_known_args(_split(line, "%%flow"))
    if not _NAME.match(ns.name):
        raise ValidationError(
            "%%flow name", ns.name, "not a valid flow name", "use letters, digits, _ . -"
        )
    if ns.runner not in runners:
        raise ValidationError(
            "--runner", ns.runner, "unknown runner", f"use one of: {', '.join(runners)}"
        )
    if ns.cron is not None and not croniter.is_valid(ns.cron):
        raise ValidationError(
            "--schedule", ns.cron, "not a valid cron expression", "e.g. --schedule '0 6 * * *'"
        )
    try:
        zoneinfo.ZoneInfo(ns.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            "--timezone", ns.timezone, "unknown time zone", "use an IANA name like Europe/Berlin"
        ) from exc
    outputs = _outputs(ns.outputs)
    interval = None
    if ns.interval is not None:
        interval = parse_duration(ns.interval, "--interval").total_seconds()
    job_variables: dict[str, Any] = {}
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("--") or len(token) < 3:
            raise ValidationError(
                "%%flow", token, "unexpected argument", "runner options look like --image NAME"
            )
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                value = rest[i + 1]
                i += 1
            else:
                value = "true"
        job_variables[key.replace("-", "_")] = _literal(value)
        i += 1
    return FlowOptions(
        name=ns.name,
        cron=ns.cron,
        timezone=ns.timezone,
        interval_seconds=interval,
        runner=ns.runner,
        job_variables=job_variables,
        outputs=outputs,
    )


def _outputs(values: list[str]) -> tuple[str, ...]:
    outputs = _names(values)
    for name in outputs:
        if not name.isidentifier():
            raise ValidationError(
                "--outputs", name, "not a variable name", "list names like --outputs total,rows"
            )
    return outputs


def parse_flow_outputs(args: Sequence[str]) -> tuple[str, ...]:
    """Return the ``--outputs`` of a ``%%flow`` line's words (other options are ignored)."""
    parser = _Parser(prog="%%flow", add_help=False)
    parser.add_argument("--outputs", action="append", default=[])
    ns, _ = parser.parse_known_args(list(args))
    return _outputs(ns.outputs)


def parse_parameters(source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(defaults, json_schema)`` of a ``%%flow`` body, refusing anything else.

    The body may only hold assignments of literals to plain names (``day = "2026-01-01"``,
    ``n: int = 3``) and comments; anything else raises ValidationError naming the line.
    Types and schema come from :mod:`nbflow.notebook.document`, so the batch path agrees.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ValidationError(
            "%%flow body", exc.text, f"not valid Python (line {exc.lineno})", "fix the syntax"
        ) from exc
    fix = 'the %%flow body holds only parameters like `region = "EU"`; move code to a cell'
    for stmt in tree.body:
        line = ast.get_source_segment(source, stmt) or ast.unparse(stmt)
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            raise ValidationError("%%flow body", line, "not an assignment of a literal", fix)
        if not isinstance(target, ast.Name):
            raise ValidationError("%%flow body", line, "the target is not a plain name", fix)
        try:
            ast.literal_eval(value)
        except ValueError as exc:
            raise ValidationError("%%flow body", line, "the value is not a literal", fix) from exc
    params = notebooks.parse_parameters(source, where="%%flow body")
    defaults = {name: p.default for name, p in params.items()}
    return defaults, notebooks.parameters_schema(params)


# --------------------------------------------------------------------------- %%task


@dataclass(frozen=True)
class TaskOptionsSpec:
    """The validated options of a ``%%task`` line."""

    name: str | None = None
    retries: int = 0
    retry_delay_seconds: float | list[float] = 0.0
    timeout_seconds: float | None = None
    cache: bool = False
    cache_expiration: timedelta | None = None
    after: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


def _task_parser() -> _Parser:
    p = _Parser(prog="%%task", add_help=False)
    p.add_argument("name", nargs="?")
    p.add_argument("--retries", default="0")
    p.add_argument("--retry-delay", default="0")
    p.add_argument("--timeout")
    p.add_argument("--cache", nargs="?", const="", default=None)
    p.add_argument("--after", action="append", default=[])
    p.add_argument("--tags", nargs="+", action="extend", default=[])
    return p


def _names(values: list[str]) -> tuple[str, ...]:
    return tuple(n.strip() for v in values for n in v.split(",") if n.strip())


def parse_task_line(line: str) -> TaskOptionsSpec:
    """Validate a ``%%task [NAME] [--retries N] [--retry-delay S[,S...]] ...`` line."""
    ns = _task_parser().parse_args(_split(line, "%%task"))
    if ns.name is not None and not _NAME.match(ns.name):
        raise ValidationError(
            "%%task name", ns.name, "not a valid task name", "use letters, digits, _ . -"
        )
    try:
        retries = int(ns.retries)
    except ValueError:
        retries = -1
    if retries < 0:
        raise ValidationError(
            "--retries", ns.retries, "not a whole number >= 0", "e.g. --retries 3"
        )
    delays = [_positive("--retry-delay", d) for d in ns.retry_delay.split(",")]
    timeout = _positive("--timeout", ns.timeout, allow_zero=False) if ns.timeout else None
    expiration = parse_duration(ns.cache) if ns.cache else None
    return TaskOptionsSpec(
        name=ns.name,
        retries=retries,
        retry_delay_seconds=delays[0] if len(delays) == 1 else delays,
        timeout_seconds=timeout,
        cache=ns.cache is not None,
        cache_expiration=expiration,
        after=_names(ns.after),
        tags=_names(ns.tags),
    )
