"""Notifications: rules that send a webhook or an email when runs enter a state.

Contracts:

* :mod:`~nbflow.notifications.models` is data only (pydantic): rules, deliveries, the
  states a rule can watch; the store and the API validate with it.
* :mod:`~nbflow.notifications.messages` is pure: matching and message rendering.
* :mod:`~nbflow.notifications.delivery` sends one attempt (httpx, smtplib).
* The package imports only the domain (it is the domain layer of tests/test_layout.py),
  so the store (:mod:`nbflow.orchestration.store.automations`) and the CLI may use it.
  Rules fire only inside a server: its notification service
  (``nbflow_server/services/notifications.py``) records each delivery before it sends
  (once per rule, run and event) and records every attempt; the embedded store only
  keeps rules.

Importing this package imports the models only (no httpx, no SQLAlchemy).
"""

from __future__ import annotations

from nbflow.notifications.models import (
    NOTIFY_STATES,
    Action,
    Automation,
    AutomationCreate,
    DeliveryAttempt,
    DeliveryStatus,
    MatchKind,
    NotificationDelivery,
    longer_than_event,
    parse_duration,
)

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
