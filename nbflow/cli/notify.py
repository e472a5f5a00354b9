"""``nbflow notify add|ls|rm|enable|disable|deliveries``: notification rules.

A rule watches the runs of a deployment, a flow, a tag, or any run, and fires when one
enters a state (``--on FAILED,CRASHED``; also COMPLETED, CANCELLED, LATE) or has been
Running longer than ``--longer-than 30m``.  It POSTs JSON to a webhook (``--slack`` for
Slack's ``{"text": ...}``) or emails addresses through the server's SMTP settings.

With a server (``NBFLOW_API_URL``) the rules go through its ``/automations`` API; without
one they are kept in the embedded store, and fire only when a server runs on that store
(the server's notification service is what sends them).  docs/notifications.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from uuid import UUID

import pydantic

from nbflow.cli import EXIT_FAILED, EXIT_OK, UsageError
from nbflow.cli._output import format_time, print_table
from nbflow.client import Client, get_client
from nbflow.client.http import HTTPClient
from nbflow.exceptions import NotFound, ValidationError
from nbflow.notifications.models import (
    NOTIFY_STATES,
    Automation,
    AutomationCreate,
    NotificationDelivery,
    parse_duration,
)

__all__ = ["register"]

#: Rule fields as the command line names them (errors name the option to fix).
_OPTIONS = {
    "on_states": "--on",
    "webhook_url": "--webhook",
    "email_to": "--email",
    "longer_than_seconds": "--longer-than",
    "match_value": "--deployment/--flow/--tag",
    "name": "--name",
}


def register(subparsers: Any) -> None:
    """Add the ``notify`` command."""
    parser = subparsers.add_parser(
        "notify",
        help="add, list and remove notification rules (webhook or email)",
        description="Notification rules: when runs of a deployment, flow or tag enter a "
        "state or run too long, POST a webhook or send an email. Rules fire inside a "
        "server (its notification service); see docs/notifications.md.",
    )
    sub = parser.add_subparsers(
        dest="notify_command", metavar="add|ls|rm|enable|disable|deliveries"
    )
    sub.required = True

    add = sub.add_parser(
        "add",
        help="add a rule",
        description="Add a rule. Example: nbflow notify add --on FAILED,CRASHED "
        "--webhook https://hooks.slack.com/services/T/B/X --slack --deployment nightly",
    )
    add.add_argument(
        "--on",
        metavar="STATES",
        default="",
        help=f"comma-separated states that fire the rule: {', '.join(NOTIFY_STATES)}",
    )
    action = add.add_mutually_exclusive_group(required=True)
    action.add_argument("--webhook", metavar="URL", help="POST the notification as JSON here")
    action.add_argument("--email", metavar="ADDR", help="email these addresses (comma-separated)")
    add.add_argument(
        "--slack", action="store_true", help='send Slack\'s {"text": ...} to the webhook'
    )
    which = add.add_mutually_exclusive_group()
    which.add_argument(
        "--deployment", metavar="NAME", help="runs of this deployment (or FLOW/NAME)"
    )
    which.add_argument("--flow", metavar="NAME", help="runs of this flow")
    which.add_argument("--tag", metavar="TAG", help="runs with this tag (or their deployment's)")
    add.add_argument(
        "--longer-than",
        metavar="DURATION",
        help="also fire once when a run has been Running longer than this (90s, 30m, 2h)",
    )
    add.add_argument("--name", default="", help="a name for the rule (default: from its terms)")
    add.add_argument("--json", action="store_true", help="print the rule as JSON")
    add.set_defaults(handler=handle_add, prog=add.prog)

    ls = sub.add_parser("ls", help="list the rules")
    ls.add_argument("--json", action="store_true", help="print them as a JSON list")
    ls.set_defaults(handler=handle_ls, prog=ls.prog)

    rm = sub.add_parser("rm", help="remove a rule (and its delivery records)")
    rm.add_argument("id", metavar="ID", help="the rule's id (or a unique prefix of it)")
    rm.set_defaults(handler=handle_rm, prog=rm.prog)

    for verb, on in (("enable", True), ("disable", False)):
        toggle = sub.add_parser(verb, help=f"{verb} a rule (a disabled rule fires nothing)")
        toggle.add_argument("id", metavar="ID", help="the rule's id (or a unique prefix of it)")
        toggle.set_defaults(handler=handle_enable, enabled=on, prog=toggle.prog)

    deliveries = sub.add_parser(
        "deliveries", help="list deliveries (of one rule), newest first, with their attempts"
    )
    deliveries.add_argument("id", metavar="ID", nargs="?", help="only this rule's deliveries")
    deliveries.add_argument("--limit", type=int, default=50, help="most deliveries to show")
    deliveries.add_argument("--json", action="store_true", help="print them as a JSON list")
    deliveries.set_defaults(handler=handle_deliveries, prog=deliveries.prog)


# -- the rules' store: the server's API, or the embedded store -----------------------------


class _Rules:
    """The rules and deliveries of the server the CLI talks to, or of the embedded store."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.http = client if isinstance(client, HTTPClient) else None
        self.embedded = self.http is None

    def _http(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self.http is not None
        return self.http.request(method, path, **kwargs)

    def _store(self) -> Any:
        from nbflow.client.embedded import EmbeddedClient
        from nbflow.orchestration.store.automations import AutomationStore

        if not isinstance(self.client, EmbeddedClient):
            raise UsageError(
                f"notification rules need a server or the embedded store, not {self.client!r}"
            )
        return AutomationStore(self.client.store)

    def create(self, rule: AutomationCreate) -> Automation:
        if self.embedded:
            created: Automation = self._store().create(Automation.model_validate(rule.model_dump()))
            return created
        data = self._http("POST", "automations", json=rule.model_dump(mode="json"), retry="connect")
        return Automation.model_validate(data)

    def rules(self) -> list[Automation]:
        if self.embedded:
            found: list[Automation] = self._store().read_all()
            return found
        return [Automation.model_validate(r) for r in self._http("GET", "automations")["items"]]

    def delete(self, automation_id: UUID) -> None:
        if self.embedded:
            self._store().delete(automation_id)
        else:
            self._http(
                "DELETE", f"automations/{automation_id}", kind="automation", key=automation_id
            )

    def set_enabled(self, automation_id: UUID, enabled: bool) -> Automation:
        if self.embedded:
            updated: Automation = self._store().update(automation_id, enabled=enabled)
            return updated
        data = self._http(
            "PATCH",
            f"automations/{automation_id}",
            json={"enabled": enabled},
            kind="automation",
            key=automation_id,
        )
        return Automation.model_validate(data)

    def deliveries(self, automation_id: UUID | None, limit: int) -> list[NotificationDelivery]:
        if self.embedded:
            found: list[NotificationDelivery] = self._store().read_deliveries(
                automation_id=automation_id, limit=limit
            )
            return found
        params: dict[str, Any] = {"limit": limit}
        if automation_id is not None:
            params["automation_id"] = str(automation_id)
        data = self._http("GET", "notification_deliveries", params=params)
        return [NotificationDelivery.model_validate(d) for d in data["items"]]

    def resolve(self, text: str) -> UUID:
        """Return the id of the rule ``text`` names: its id or a unique prefix of it."""
        try:
            return UUID(text)
        except ValueError:
            pass
        found = [r.id for r in self.rules() if str(r.id).startswith(text.lower())]
        if len(found) != 1:
            problem = "matches no rule" if not found else f"matches {len(found)} rules"
            raise UsageError(f"ID={text!r} {problem}; see 'nbflow notify ls' for the ids")
        return found[0]


def _usage(exc: pydantic.ValidationError | ValidationError) -> UsageError:
    """Turn a refused rule into a usage error naming the option."""
    if isinstance(exc, pydantic.ValidationError):
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        problem = first["msg"].removeprefix("Value error, ")
    else:
        field, problem = exc.field.removeprefix("body."), str(exc)
    option = _OPTIONS.get(field.split(".")[0])
    return UsageError(f"{option}: {problem}" if option else problem)


# -- commands ------------------------------------------------------------------------------


def handle_add(args: argparse.Namespace) -> int:
    """Add a rule."""
    kind, value = "any", None
    for name in ("deployment", "flow", "tag"):
        if getattr(args, name):
            kind, value = name, getattr(args, name)
    if args.slack and not args.webhook:
        raise UsageError("--slack formats a webhook's payload; give --webhook URL with it")
    try:
        longer = (
            parse_duration(args.longer_than, field="--longer-than") if args.longer_than else None
        )
        rule = AutomationCreate(
            name=args.name,
            on_states=args.on,  # type: ignore[arg-type]  # "A,B" is split by the model
            match_kind=kind,  # type: ignore[arg-type]
            match_value=value,
            longer_than_seconds=longer,
            action="webhook" if args.webhook else "email",  # type: ignore[arg-type]
            webhook_url=args.webhook,
            webhook_slack=args.slack,
            email_to=args.email or [],  # type: ignore[arg-type]
        )
    except pydantic.ValidationError as exc:
        raise _usage(exc) from exc
    except ValidationError as exc:
        raise UsageError(str(exc)) from exc
    rules = _Rules(get_client())
    try:
        created = rules.create(rule)
    except ValidationError as exc:
        raise _usage(exc) from exc
    if args.json:
        json.dump(created.model_dump(mode="json"), sys.stdout, indent=2)
        print()
        return EXIT_OK
    print(f"rule {created.id}: {created.name} -> {_target(created)}")
    if rules.embedded:
        print(
            "note: stored in the embedded store; rules fire only while a server runs on it "
            "(nbflow server), not from 'nbflow run'",
            file=sys.stderr,
        )
    return EXIT_OK


def _target(rule: Automation) -> str:
    if rule.webhook_url:
        return f"{'slack ' if rule.webhook_slack else ''}webhook {rule.webhook_url}"
    return f"email {', '.join(rule.email_to)}"


def handle_ls(args: argparse.Namespace) -> int:
    """List the rules."""
    found = _Rules(get_client()).rules()
    if args.json:
        json.dump([r.model_dump(mode="json") for r in found], sys.stdout, indent=2)
        print()
        return EXIT_OK
    if not found:
        print("no notification rules (nbflow notify add --on FAILED --webhook URL)")
        return EXIT_OK
    rows = []
    for r in found:
        which = (
            "any run" if r.match_kind.value == "any" else f"{r.match_kind.value} {r.match_value}"
        )
        when = ",".join(r.on_states)
        if r.longer_than_seconds is not None:
            when = f"{when}{',' if when else ''}>{r.longer_than_seconds:g}s"
        rows.append([str(r.id), r.name, which, when, _target(r), "yes" if r.enabled else "no"])
    print_table(["ID", "NAME", "RUNS", "WHEN", "ACTION", "ENABLED"], rows)
    return EXIT_OK


def handle_rm(args: argparse.Namespace) -> int:
    """Remove a rule."""
    rules = _Rules(get_client())
    automation_id = rules.resolve(args.id)
    try:
        rules.delete(automation_id)
    except NotFound:
        print(f"nbflow: error: no notification rule {args.id!r}", file=sys.stderr)
        return EXIT_FAILED
    print(f"rule {automation_id} removed")
    return EXIT_OK


def handle_enable(args: argparse.Namespace) -> int:
    """Enable or disable a rule."""
    rules = _Rules(get_client())
    automation_id = rules.resolve(args.id)
    try:
        rule = rules.set_enabled(automation_id, args.enabled)
    except NotFound:
        print(f"nbflow: error: no notification rule {args.id!r}", file=sys.stderr)
        return EXIT_FAILED
    print(f"rule {rule.id} {'enabled' if rule.enabled else 'disabled'}: {rule.name}")
    return EXIT_OK


def handle_deliveries(args: argparse.Namespace) -> int:
    """List deliveries with their attempts."""
    if args.limit < 1:
        raise UsageError(f"--limit={args.limit}: must be at least 1")
    rules = _Rules(get_client())
    automation_id = rules.resolve(args.id) if args.id else None
    found = rules.deliveries(automation_id, args.limit)
    if args.json:
        json.dump([d.model_dump(mode="json") for d in found], sys.stdout, indent=2)
        print()
        return EXIT_OK
    if not found:
        print("no deliveries yet")
        return EXIT_OK
    rows = [
        [
            format_time(d.created),
            str(d.automation_id)[:8],
            str(d.flow_run_id)[:8],
            d.event,
            d.status.value,
            str(d.attempts),
            d.last_error or "",
        ]
        for d in found
    ]
    print_table(["WHEN", "RULE", "RUN", "EVENT", "STATUS", "ATTEMPTS", "LAST ERROR"], rows)
    return EXIT_OK
