"""Notification rules (automations) and their deliveries in the store.

:class:`AutomationStore` runs each operation as one transaction of the
:class:`~nbflow.orchestration.store.store.Store` it is given.  A delivery is recorded
*before* it is sent, keyed by (rule, run, event): recording the same key again answers
None, so a state entered once notifies once per rule, also across a server restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from pydantic_core import to_jsonable_python
from sqlalchemy.exc import IntegrityError

from nbflow.exceptions import NotFound
from nbflow.notifications.models import (
    Automation,
    DeliveryAttempt,
    DeliveryStatus,
    NotificationDelivery,
)
from nbflow.orchestration.store.store import Store
from nbflow.orchestration.store.tables import automations, notification_deliveries
from nbflow.states import now

__all__ = ["AutomationStore"]

_AUTOMATION_FIELDS = tuple(c.name for c in automations.c)
_DELIVERY_FIELDS = tuple(c.name for c in notification_deliveries.c)


def _automation_row(rule: Automation) -> dict[str, Any]:
    data = rule.model_dump(mode="python")
    data["on_states"] = list(rule.on_states)
    data["email_to"] = list(rule.email_to)
    data["match_kind"] = rule.match_kind.value
    data["action"] = rule.action.value
    return {k: data[k] for k in _AUTOMATION_FIELDS}


def _read_automation(row: sa.Row[Any]) -> Automation:
    return Automation.model_validate(dict(row._mapping))


def _delivery_row(delivery: NotificationDelivery) -> dict[str, Any]:
    data = delivery.model_dump(mode="python")
    data["status"] = delivery.status.value
    data["history"] = to_jsonable_python(delivery.history)
    data["message"] = to_jsonable_python(delivery.message)
    return {k: data[k] for k in _DELIVERY_FIELDS}


def _read_delivery(row: sa.Row[Any]) -> NotificationDelivery:
    return NotificationDelivery.model_validate(dict(row._mapping))


class AutomationStore:
    """Create, list and delete rules; record deliveries and each attempt's outcome."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- rules ---------------------------------------------------------------------------
    def create(self, rule: Automation) -> Automation:
        """Store a new rule."""
        row = _automation_row(rule)
        self.store.write_transaction(lambda c: c.execute(sa.insert(automations).values(row)))
        return self.read(rule.id)

    def read(self, automation_id: UUID) -> Automation:
        """Return the rule with this id (``NotFound`` if none)."""
        query = sa.select(automations).where(automations.c.id == automation_id)
        row = self.store.read_transaction(lambda c: c.execute(query).first())
        if row is None:
            raise NotFound("automation", automation_id)
        return _read_automation(row)

    def read_all(self, *, enabled_only: bool = False) -> list[Automation]:
        """Return the rules, oldest first."""
        query = sa.select(automations).order_by(automations.c.created, automations.c.id)
        if enabled_only:
            query = query.where(automations.c.enabled.is_(True))
        return [
            _read_automation(r)
            for r in self.store.read_transaction(lambda c: c.execute(query).all())
        ]

    def update(
        self, automation_id: UUID, *, enabled: bool | None = None, name: str | None = None
    ) -> Automation:
        """Enable or disable a rule, or rename it (``NotFound`` if none)."""
        values: dict[str, Any] = {}
        if enabled is not None:
            values["enabled"] = enabled
        if name is not None:
            values["name"] = name
        if values:
            stmt = sa.update(automations).where(automations.c.id == automation_id).values(values)
            if self.store.write_transaction(lambda c: c.execute(stmt).rowcount) == 0:
                raise NotFound("automation", automation_id)
        return self.read(automation_id)

    def delete(self, automation_id: UUID) -> None:
        """Delete a rule and its deliveries (``NotFound`` if none)."""
        stmt = sa.delete(automations).where(automations.c.id == automation_id)
        if self.store.write_transaction(lambda c: c.execute(stmt).rowcount) == 0:
            raise NotFound("automation", automation_id)

    # -- deliveries ----------------------------------------------------------------------
    def record_delivery(self, delivery: NotificationDelivery) -> NotificationDelivery | None:
        """Record a delivery to make; None when this rule, run and event already have one."""
        key = (
            notification_deliveries.c.automation_id == delivery.automation_id,
            notification_deliveries.c.flow_run_id == delivery.flow_run_id,
            notification_deliveries.c.event == delivery.event,
        )
        row = _delivery_row(delivery)

        def tx(conn: sa.Connection) -> bool:
            if conn.execute(sa.select(notification_deliveries.c.id).where(*key)).first():
                return False
            conn.execute(sa.insert(notification_deliveries).values(row))
            return True

        try:
            created = self.store.write_transaction(tx)
        except IntegrityError:
            # Recorded by another process at the same moment, or the run was just deleted.
            return None
        return delivery if created else None

    def record_attempt(
        self,
        delivery_id: UUID,
        *,
        ok: bool,
        error: str | None,
        give_up: bool,
    ) -> NotificationDelivery:
        """Append one attempt's outcome; the status becomes delivered, failed or stays pending."""
        query = sa.select(notification_deliveries).where(
            notification_deliveries.c.id == delivery_id
        )

        def tx(conn: sa.Connection) -> NotificationDelivery:
            row = conn.execute(query.with_for_update()).first()
            if row is None:
                raise NotFound("notification delivery", delivery_id)
            current = _read_delivery(row)
            attempt = DeliveryAttempt(attempt=current.attempts + 1, at=now(), ok=ok, error=error)
            status = (
                DeliveryStatus.DELIVERED
                if ok
                else DeliveryStatus.FAILED
                if give_up
                else DeliveryStatus.PENDING
            )
            updated = current.model_copy(
                update={
                    "attempts": attempt.attempt,
                    "history": [*current.history, attempt],
                    "status": status,
                    "last_error": current.last_error if ok else error,
                    "updated": attempt.at,
                }
            )
            values = _delivery_row(updated)
            conn.execute(
                sa.update(notification_deliveries)
                .where(notification_deliveries.c.id == delivery_id)
                .values(
                    {
                        k: values[k]
                        for k in ("attempts", "history", "status", "last_error", "updated")
                    }
                )
            )
            return updated

        return self.store.write_transaction(tx)

    def read_deliveries(
        self,
        *,
        automation_id: UUID | None = None,
        flow_run_id: UUID | None = None,
        statuses: Sequence[DeliveryStatus] | None = None,
        limit: int = 100,
    ) -> list[NotificationDelivery]:
        """Return deliveries, newest first."""
        d = notification_deliveries.c
        query = sa.select(notification_deliveries).order_by(d.created.desc(), d.id).limit(limit)
        if automation_id is not None:
            query = query.where(d.automation_id == automation_id)
        if flow_run_id is not None:
            query = query.where(d.flow_run_id == flow_run_id)
        if statuses is not None:
            query = query.where(d.status.in_([s.value for s in statuses]))
        return [
            _read_delivery(r) for r in self.store.read_transaction(lambda c: c.execute(query).all())
        ]
