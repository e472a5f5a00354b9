"""The automations store on SQLite and PostgreSQL: rules, deliveries recorded once, attempts."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from nbflow.client.embedded import EmbeddedClient
from nbflow.exceptions import NotFound
from nbflow.notifications import Automation, DeliveryStatus, NotificationDelivery
from nbflow.orchestration.store.automations import AutomationStore
from nbflow.schemas import Flow, FlowRunCreate
from nbflow.states import Failed


@pytest.fixture
def client(db_url: str) -> Iterator[EmbeddedClient]:
    opened = EmbeddedClient.from_url(db_url)
    try:
        yield opened
    finally:
        opened.close()


def _rule() -> Automation:
    return Automation.model_validate(
        {"action": "email", "email_to": ["ops@example.com"], "on_states": ["FAILED"],
         "match_kind": "tag", "match_value": "prod", "longer_than_seconds": 60}
    )  # fmt: skip


def test_rules_round_trip_and_delete(client: EmbeddedClient) -> None:
    store = AutomationStore(client.store)
    rule = store.create(_rule())
    assert store.read(rule.id) == rule
    assert store.read_all() == [rule]
    store.delete(rule.id)
    assert store.read_all() == []
    with pytest.raises(NotFound, match="automation"):
        store.read(rule.id)
    with pytest.raises(NotFound):
        store.delete(rule.id)


def test_a_delivery_is_recorded_once_and_keeps_every_attempt(client: EmbeddedClient) -> None:
    store = AutomationStore(client.store)
    rule = store.create(_rule())
    flow = client.create_flow(Flow(name="f"))
    run = client.create_flow_run(FlowRunCreate(flow_id=flow.id, state=Failed()))
    first = NotificationDelivery(
        automation_id=rule.id, flow_run_id=run.id, event="Failed", message={"text": "x"}
    )
    assert store.record_delivery(first) == first
    again = first.model_copy(update={"id": uuid4()})
    assert store.record_delivery(again) is None
    assert [d.id for d in store.read_deliveries(automation_id=rule.id)] == [first.id]

    failed = store.record_attempt(first.id, ok=False, error="HTTP 500", give_up=False)
    assert (failed.attempts, failed.status, failed.last_error) == (
        1,
        DeliveryStatus.PENDING,
        "HTTP 500",
    )
    done = store.record_attempt(first.id, ok=True, error=None, give_up=False)
    assert done.status is DeliveryStatus.DELIVERED
    stored = store.read_deliveries(flow_run_id=run.id)[0]
    assert [(a.attempt, a.ok, a.error) for a in stored.history] == [
        (1, False, "HTTP 500"),
        (2, True, None),
    ]
    assert store.read_deliveries(statuses=[DeliveryStatus.PENDING]) == []
    # Deleting the rule deletes its deliveries.
    store.delete(rule.id)
    assert store.read_deliveries() == []
