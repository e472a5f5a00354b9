"""Option parsing and validation of %%flow, %%task and the parameters cell."""

from __future__ import annotations

from datetime import timedelta

import pytest

from nbflow.exceptions import ValidationError
from nbflow.notebook.arguments import (
    parse_duration,
    parse_flow_line,
    parse_parameters,
    parse_task_line,
)


def test_flow_line_full() -> None:
    opts = parse_flow_line(
        'daily_sales --schedule "0 6 * * *" --timezone Europe/Berlin --runner docker '
        "--image python:3.12 --cpu 2 --privileged"
    )
    assert opts.name == "daily_sales"
    assert opts.cron == "0 6 * * *"
    assert opts.timezone == "Europe/Berlin"
    assert opts.runner == "docker"
    assert opts.job_variables == {"image": "python:3.12", "cpu": 2, "privileged": True}


def test_flow_line_defaults_and_interval() -> None:
    opts = parse_flow_line("f --interval 30m")
    assert (opts.runner, opts.timezone, opts.cron) == ("subprocess", "UTC", None)
    assert opts.interval_seconds == 1800


@pytest.mark.parametrize(
    ("line", "field", "hint"),
    [
        ("f --runner lambda", "--runner", "subprocess, docker, kubernetes"),
        ("f --schedule 'every day'", "--schedule", "cron"),
        ("f --schedule '61 * * * *'", "--schedule", "cron"),
        ("f --timezone Mars/Olympus", "--timezone", "IANA"),
        ("f --interval soon", "--interval", "duration"),
        ("f --interval 0", "--interval", "positive"),
        ("'bad name!'", "%%flow name", "letters"),
        ("", "%%flow", "name"),
        ("f stray", "%%flow", "runner options"),
        ("f --schedule '0 6 * * *", "%%flow", "quotes"),
    ],
)
def test_flow_line_errors(line: str, field: str, hint: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_flow_line(line)
    assert info.value.field == field
    assert hint in str(info.value)


def test_parameters_cell() -> None:
    defaults, schema = parse_parameters(
        '# parameters\nregion = "EU"\nday = "2026-01-01"\nn: int = 3\nrate = 0.5\n'
        "flags = [1, 2]\nopts = {'a': (1, 2)}\nmaybe = None\non = True\n"
    )
    assert defaults == {
        "region": "EU",
        "day": "2026-01-01",
        "n": 3,
        "rate": 0.5,
        "flags": [1, 2],
        "opts": {"a": (1, 2)},
        "maybe": None,
        "on": True,
    }
    props = schema["properties"]
    assert props["region"] == {"title": "region", "type": "string", "default": "EU"}
    assert props["n"]["type"] == "integer"
    assert props["rate"]["type"] == "number"
    assert props["on"]["type"] == "boolean"
    assert props["opts"]["default"] == {"a": [1, 2]}
    assert "type" not in props["maybe"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("x = f()", "not a literal"),
        ("import os", "not an assignment"),
        ("a = b = 1", "not an assignment"),
        ("a.b = 1", "plain name"),
        ("a, b = 1, 2", "plain name"),
        ("print(1)", "not an assignment"),
        ("x = (", "not valid Python"),
        ("x = [y]", "not a literal"),
    ],
)
def test_parameters_cell_errors(body: str, problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_parameters(body)
    assert problem in str(info.value)


def test_empty_parameters_cell() -> None:
    defaults, schema = parse_parameters("")
    assert defaults == {} and schema["properties"] == {}


def test_task_line_full() -> None:
    opts = parse_task_line(
        "extract --retries 3 --retry-delay 1,2,4 --timeout 600 --cache 1d --after a,b --after c "
        "--tags etl nightly"
    )
    assert opts.name == "extract"
    assert opts.retries == 3
    assert opts.retry_delay_seconds == [1.0, 2.0, 4.0]
    assert opts.timeout_seconds == 600
    assert opts.cache and opts.cache_expiration == timedelta(days=1)
    assert opts.after == ("a", "b", "c")
    assert opts.tags == ("etl", "nightly")


def test_task_line_defaults() -> None:
    opts = parse_task_line("")
    assert opts.name is None and opts.retries == 0 and opts.retry_delay_seconds == 0.0
    assert not opts.cache and opts.cache_expiration is None and opts.timeout_seconds is None


def test_task_cache_without_ttl() -> None:
    opts = parse_task_line("load --cache")
    assert opts.cache and opts.cache_expiration is None


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("t --retries -1", "--retries"),
        ("t --retries two", "--retries"),
        ("t --retry-delay 1,x", "--retry-delay"),
        ("t --timeout 0", "--timeout"),
        ("t --cache forever", "--cache"),
        ("t --bogus", "%%task"),
        ("a b", "%%task"),
        ("'no spaces'", "%%task name"),
    ],
)
def test_task_line_errors(line: str, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_task_line(line)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("45s", 45), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1w", 604800),
     ("1h30m", 5400), ("1.5h", 5400), ("250ms", 0.25)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds
