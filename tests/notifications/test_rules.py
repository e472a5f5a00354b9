"""Rules: validation that names the field and the fix, durations, matching, messages."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pydantic
import pytest

from nbflow.exceptions import ValidationError
from nbflow.notifications import Automation, AutomationCreate, MatchKind, parse_duration
from nbflow.notifications.messages import (
    RunContext,
    matches,
    panel_link,
    render,
    state_key,
)
from nbflow.schemas import FlowRun, TaskRun
from nbflow.states import Completed, Crashed, Failed, Late, Running, Scheduled

WEBHOOK = {"action": "webhook", "webhook_url": "https://hooks.example.com/x"}


def _errors(**body: Any) -> list[tuple[str, str]]:
    with pytest.raises(pydantic.ValidationError) as info:
        AutomationCreate.model_validate(body)
    return [(".".join(map(str, e["loc"])), e["msg"]) for e in info.value.errors()]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({**WEBHOOK, "on_states": ["FAILD"]}, "on_states", ["'FAILD'", "FAILED, CRASHED"]),
        ({**WEBHOOK, "on_states": ["RUNNING"]}, "on_states", ["'RUNNING'", "LATE"]),
        (
            {"action": "webhook", "webhook_url": "ftp://x.org/h", "on_states": ["FAILED"]},
            "webhook_url",
            ["'ftp://x.org/h'", "http(s)"],
        ),
        (
            {"action": "webhook", "webhook_url": "hooks.slack.com", "on_states": ["FAILED"]},
            "webhook_url",
            ["http(s)"],
        ),
        (
            {"action": "email", "email_to": ["ops-at-example.com"], "on_states": ["FAILED"]},
            "email_to",
            ["'ops-at-example.com'", "name@example.com"],
        ),
        ({**WEBHOOK, "longer_than_seconds": -5}, "longer_than_seconds", ["-5", "positive"]),
        ({**WEBHOOK, "longer_than_seconds": 0}, "longer_than_seconds", ["positive"]),
        ({**WEBHOOK}, "", ["never fire"]),
        ({**WEBHOOK, "on_states": ["FAILED"], "match_kind": "tag"}, "", ["match_value"]),
        ({"action": "webhook", "on_states": ["FAILED"]}, "", ["webhook_url is missing"]),
        ({"action": "email", "on_states": ["FAILED"]}, "", ["email_to is empty"]),
        ({**WEBHOOK, "on_states": ["FAILED"], "match_kind": "job"}, "match_kind", ["deployment"]),
    ],
)
def test_bad_rules_name_the_field_the_value_and_the_fix(
    body: dict[str, Any], field: str, words: list[str]
) -> None:
    errors = _errors(**body)
    assert errors[0][0] == field, errors
    for word in words:
        assert word in errors[0][1], errors


def test_a_good_rule_is_normalized_and_named() -> None:
    rule = AutomationCreate.model_validate(
        {**WEBHOOK, "on_states": "failed, Crashed,FAILED", "match_kind": "deployment",
         "match_value": "nightly", "longer_than_seconds": 1800}
    )  # fmt: skip
    assert rule.on_states == ["FAILED", "CRASHED"]
    assert rule.name == "deployment nightly: failed or crashed or running > 1800 s"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45", 45), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400),
     ("1.5h", 5400), ("1h 30m", 5400)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "30x", "-5m", "0s", "m30"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_duration(text, field="--longer-than")
    assert info.value.field == "--longer-than"
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("state", "key"),
    [(Failed(), "FAILED"), (Crashed(), "CRASHED"), (Completed(), "COMPLETED"),
     (Late(), "LATE"), (Scheduled(), None), (Running(), None), (None, None)],
)  # fmt: skip
def test_which_states_a_rule_can_watch(state: Any, key: str | None) -> None:
    assert state_key(state) == key


def _context(**kwargs: Any) -> RunContext:
    run = FlowRun(name="brave-otter", flow_id=uuid4(), state=kwargs.pop("state", Failed()))
    return RunContext(run=run, **{"flow_name": "sales", **kwargs})


def _rule(kind: str, value: str | None) -> Automation:
    return Automation.model_validate(
        {**WEBHOOK, "on_states": ["FAILED"], "match_kind": kind, "match_value": value}
    )


@pytest.mark.parametrize(
    ("kind", "value", "context", "matched"),
    [
        ("any", None, {}, True),
        ("flow", "sales", {}, True),
        ("flow", "other", {}, False),
        ("deployment", "eu", {"deployment_name": "eu"}, True),
        ("deployment", "sales/eu", {"deployment_name": "eu"}, True),
        ("deployment", "other/eu", {"deployment_name": "eu"}, False),
        ("deployment", "eu", {}, False),
        ("tag", "prod", {"tags": {"prod", "eu"}}, True),
        ("tag", "prod", {"tags": {"dev"}}, False),
    ],
)
def test_matching(kind: str, value: str | None, context: dict[str, Any], matched: bool) -> None:
    assert MatchKind(kind)
    assert matches(_rule(kind, value), _context(**context)) is matched


def test_the_message_names_run_state_failing_cell_error_and_link() -> None:
    failed = Failed(message="cell 3 (In [3]) raised ValueError: no sales today")
    task = TaskRun(
        flow_run_id=uuid4(),
        name="extract",
        task_key="extract",
        state=Failed(message="ValueError: no sales today"),
    )
    context = _context(
        state=failed,
        deployment_name="eu",
        failing_task=task,
        link=panel_link("http://jupyter.example.com/user/me/", "RUN"),
    )
    message = render(_rule("any", None), context, "Failed")
    assert message["subject"] == "[nbflow] sales/eu: run brave-otter Failed"
    text = message["text"]
    for part in ("brave-otter", "sales/eu", "Failed", "Failing cell: extract",
                 "ValueError: no sales today",
                 "http://jupyter.example.com/user/me/lab?nbflow-run=RUN"):  # fmt: skip
        assert part in text, text
    payload = message["payload"]
    assert payload["failing_cell"] == {"name": "extract", "error": "ValueError: no sales today"}
    assert payload["flow_run"]["state"]["name"] == "Failed"
    assert payload["flow_run"]["deployment"] == "eu"
