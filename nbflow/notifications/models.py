"""Notification rules and deliveries as pydantic models (data only, no I/O).

A rule (an *automation*) says which runs it watches (``match_kind``: a deployment, a flow,
a tag, or any run), when it fires (entering one of ``on_states``, or running longer than
``longer_than_seconds``) and what it does (POST to a webhook, or email addresses).  Bad
input fails validation naming the field, the value and the fix; the API answers it 400.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nbflow.exceptions import ValidationError
from nbflow.states import now

__all__ = [
    "NOTIFY_STATES",
    "Action",
    "Automation",
    "AutomationCreate",
    "DeliveryAttempt",
    "DeliveryStatus",
    "MatchKind",
    "NotificationDelivery",
    "longer_than_event",
    "parse_duration",
]

#: The states a rule can watch: the terminal states, and Late (a Scheduled run not started).
NOTIFY_STATES: tuple[str, ...] = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED", "LATE")

_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class MatchKind(StrEnum):
    """Which runs a rule watches."""

    DEPLOYMENT = "deployment"
    FLOW = "flow"
    TAG = "tag"
    ANY = "any"


class Action(StrEnum):
    """What a rule does when it fires."""

    WEBHOOK = "webhook"
    EMAIL = "email"


class DeliveryStatus(StrEnum):
    """Where a delivery stands: still being tried, delivered, or given up."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def parse_duration(text: str, *, field: str = "longer_than") -> float:
    """Return the seconds of ``30m``, ``2h``, ``1h30m``, ``90s`` or ``45`` (seconds)."""
    cleaned = text.strip()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(cleaned):
        if match.start() != pos or not match.group(0).strip():
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        pos = match.end()
        while pos < len(cleaned) and cleaned[pos] == " ":
            pos += 1
    if not cleaned or pos != len(cleaned):
        raise ValidationError(
            field, text, "is not a duration", "write e.g. 90s, 30m, 2h, 1h30m or 1d"
        )
    if total <= 0:
        raise ValidationError(field, text, "must be longer than 0 seconds")
    return total


def longer_than_event(seconds: float) -> str:
    """Return the event name of a rule's duration: ``running longer than 1800 s``."""
    return f"running longer than {seconds:g} s"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutomationCreate(_Model):
    """A new notification rule (the body of ``POST /automations``)."""

    name: str = Field(default="", max_length=200)
    #: States that fire the rule (any case): COMPLETED, FAILED, CRASHED, CANCELLED, LATE.
    on_states: list[str] = Field(default_factory=list)
    match_kind: MatchKind = MatchKind.ANY
    #: The deployment (``NAME`` or ``FLOW/NAME``), flow or tag; none for ``any``.
    match_value: str | None = Field(default=None, max_length=400)
    #: Fire once when a run has been Running longer than this many seconds.
    longer_than_seconds: float | None = None
    action: Action
    webhook_url: str | None = None
    #: Send Slack's ``{"text": ...}`` instead of nbflow's JSON payload.
    webhook_slack: bool = False
    email_to: list[str] = Field(default_factory=list)
    enabled: bool = True

    @field_validator("on_states", mode="before")
    @classmethod
    def _states(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            return value
        states: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"{item!r} is not a state name; use strings")
            state = item.strip().upper()
            if state not in NOTIFY_STATES:
                raise ValueError(
                    f"{item!r} is not a state a rule can watch; use one or more of "
                    f"{', '.join(NOTIFY_STATES)}"
                )
            if state not in states:
                states.append(state)
        return states

    @field_validator("longer_than_seconds")
    @classmethod
    def _duration(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:
            raise ValueError(
                f"{value!r} is not a duration a run can exceed; give a positive number of "
                "seconds (1800 for 30 minutes), or leave it out"
            )
        return value

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{value!r} is not an http(s) URL; give the receiver's address, "
                "e.g. https://hooks.slack.com/services/..."
            )
        return value.strip()

    @field_validator("email_to", mode="before")
    @classmethod
    def _emails(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            return value
        addresses = []
        for item in value:
            address = item.strip() if isinstance(item, str) else item
            if not isinstance(address, str) or not _EMAIL.match(address):
                raise ValueError(f"{item!r} is not an email address; write it as name@example.com")
            addresses.append(address)
        return addresses

    @model_validator(mode="after")
    def _complete(self) -> AutomationCreate:
        if not self.on_states and self.longer_than_seconds is None:
            raise ValueError(
                "on_states is empty and longer_than_seconds is not set: the rule would never "
                f"fire; give states ({', '.join(NOTIFY_STATES)}) and/or a duration"
            )
        if self.match_kind is MatchKind.ANY:
            if self.match_value:
                raise ValueError(
                    f"match_value={self.match_value!r} with match_kind 'any': name a "
                    "deployment, flow or tag in match_kind, or leave match_value out"
                )
        elif not (self.match_value or "").strip():
            raise ValueError(
                f"match_value is empty: a rule with match_kind {self.match_kind.value!r} "
                f"needs the {self.match_kind.value}'s name"
            )
        if self.action is Action.WEBHOOK:
            if not self.webhook_url:
                raise ValueError("webhook_url is missing: a webhook rule needs an http(s) URL")
            if self.email_to:
                raise ValueError("email_to is set on a webhook rule; use one action per rule")
        else:
            if not self.email_to:
                raise ValueError("email_to is empty: an email rule needs at least one address")
            if self.webhook_url or self.webhook_slack:
                raise ValueError("webhook_url is set on an email rule; use one action per rule")
        if not self.name:
            self.name = _default_name(self)
        return self


def _default_name(rule: AutomationCreate) -> str:
    when = [s.lower() for s in rule.on_states]
    if rule.longer_than_seconds is not None:
        when.append(f"running > {rule.longer_than_seconds:g} s")
    what = (
        "any run"
        if rule.match_kind is MatchKind.ANY
        else f"{rule.match_kind.value} {rule.match_value}"
    )
    return f"{what}: {' or '.join(when)}"[:200]


class Automation(AutomationCreate):
    """A stored notification rule."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    created: datetime = Field(default_factory=now)


class DeliveryAttempt(_Model):
    """The outcome of one attempt to deliver a notification."""

    attempt: int
    at: datetime
    ok: bool
    error: str | None = None


class NotificationDelivery(_Model):
    """One notification of a rule about one run's event, with every attempt's outcome."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    automation_id: uuid.UUID
    flow_run_id: uuid.UUID
    #: The state entered (``Failed``, ``Late``, ...) or ``running longer than N s``.
    event: str
    attempts: int = 0
    status: DeliveryStatus = DeliveryStatus.PENDING
    last_error: str | None = None
    history: list[DeliveryAttempt] = Field(default_factory=list)
    #: What is sent: ``subject``, ``text`` and the webhook ``payload``.
    message: dict[str, Any] = Field(default_factory=dict)
    created: datetime = Field(default_factory=now)
    updated: datetime = Field(default_factory=now)
