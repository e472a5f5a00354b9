"""``/automations`` and ``/notification_deliveries``: notification rules and their deliveries.

Users only (no run token opens them: docs/security.md).  A rule is validated as a whole
(:class:`~nbflow.notifications.models.AutomationCreate`): an unknown state, a webhook URL
that is not http(s), a bad email address or a duration that is not positive is a 400
naming ``body.<field>``.  The server's notification service fires the rules; each
delivery and each of its attempts is listed under the rule's ``deliveries``.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

from nbflow.exceptions import ValidationError
from nbflow.notifications.models import (
    Action,
    Automation,
    AutomationCreate,
    DeliveryStatus,
    NotificationDelivery,
)
from nbflow_server.handlers.base import NbflowHandler, endpoint

__all__ = [
    "AutomationDeliveriesHandler",
    "AutomationHandler",
    "AutomationList",
    "AutomationUpdate",
    "AutomationsHandler",
    "DeliveryList",
    "DeliveryQuery",
    "NotificationDeliveriesHandler",
]


class AutomationList(BaseModel):
    """Every notification rule, oldest first."""

    items: list[Automation]


class DeliveryList(BaseModel):
    """Notification deliveries, newest first, each with every attempt's outcome."""

    items: list[NotificationDelivery]


class AutomationUpdate(BaseModel):
    """What may change on a rule: on or off, and its name (delete and add to change more)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)


class DeliveryQuery(BaseModel):
    """Which deliveries to list."""

    model_config = ConfigDict(extra="forbid")

    automation_id: uuid.UUID | None = None
    flow_run_id: uuid.UUID | None = None
    status: DeliveryStatus | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class AutomationsHandler(NbflowHandler):
    """``/automations``."""

    @endpoint("read", "List the notification rules", response=AutomationList)
    async def get(self) -> None:
        rules = await self.call(self.nbflow.automations.read_all)
        self.write_model(AutomationList(items=rules))

    @endpoint(
        "write",
        "Create a notification rule: when runs of a deployment, flow or tag (or any run) "
        "enter a state or run longer than a duration, POST a webhook or send an email",
        body=AutomationCreate,
        response=Automation,
        status=201,
    )
    async def post(self) -> None:
        create = self.parse_body(AutomationCreate)
        if create.action is Action.EMAIL and not self.nbflow.smtp_host:
            raise ValidationError(
                "body.action",
                "email",
                "this server has no SMTP server to send email with",
                "set c.NbflowApp.smtp_host (docs/notifications.md), or use a webhook",
            )
        rule = Automation.model_validate(create.model_dump())
        self.write_model(await self.call(self.nbflow.automations.create, rule), status=201)


class AutomationHandler(NbflowHandler):
    """``/automations/{automation_id}``."""

    @endpoint("read", "Read a notification rule", response=Automation)
    async def get(self, automation_id: str) -> None:
        rid = self.parse_uuid("automation_id", automation_id)
        self.write_model(await self.call(self.nbflow.automations.read, rid))

    @endpoint(
        "write",
        "Enable or disable a notification rule, or rename it",
        body=AutomationUpdate,
        response=Automation,
    )
    async def patch(self, automation_id: str) -> None:
        rid = self.parse_uuid("automation_id", automation_id)
        update = self.parse_body(AutomationUpdate)
        self.changes_of(update, nullable=set())  # null is not a change: 400 naming the field
        rule = await self.call(
            self.nbflow.automations.update, rid, enabled=update.enabled, name=update.name
        )
        self.write_model(rule)

    @endpoint("write", "Delete a notification rule and its delivery records", status=204)
    async def delete(self, automation_id: str) -> None:
        rid = self.parse_uuid("automation_id", automation_id)
        await self.call(self.nbflow.automations.delete, rid)
        self.write_empty()


class AutomationDeliveriesHandler(NbflowHandler):
    """``/automations/{automation_id}/deliveries``."""

    @endpoint(
        "read",
        "List a rule's deliveries, newest first, with every attempt's outcome",
        response=DeliveryList,
    )
    async def get(self, automation_id: str) -> None:
        rid = self.parse_uuid("automation_id", automation_id)
        await self.call(self.nbflow.automations.read, rid)  # 404 for an unknown rule
        items = await self.call(self.nbflow.automations.read_deliveries, automation_id=rid)
        self.write_model(DeliveryList(items=items))


class NotificationDeliveriesHandler(NbflowHandler):
    """``/notification_deliveries``."""

    @endpoint(
        "read",
        "List notification deliveries (of a rule, a run or a status), newest first",
        query=DeliveryQuery,
        response=DeliveryList,
    )
    async def get(self) -> None:
        query = self.parse_query(DeliveryQuery)
        items = await self.call(
            self.nbflow.automations.read_deliveries,
            automation_id=query.automation_id,
            flow_run_id=query.flow_run_id,
            statuses=None if query.status is None else [query.status],
            limit=query.limit,
        )
        self.write_model(DeliveryList(items=items))
