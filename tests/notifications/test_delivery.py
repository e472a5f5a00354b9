"""Delivery to real receivers: retried with backoff, every attempt recorded, once per event.

The notification service runs on this test's event loop with a real event bus and a real
store (SQLite and PostgreSQL); the receivers are a real HTTP server and a real SMTP
server (aiosmtpd).  Waits poll with generous deadlines; nothing asserts on durations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from nbflow.client.embedded import EmbeddedClient
from nbflow.notifications import Automation, AutomationCreate, DeliveryStatus
from nbflow.notifications.delivery import Sender, SMTPSettings
from nbflow.notifications.messages import panel_link
from nbflow.orchestration.store.automations import AutomationStore
from nbflow.schemas import DeploymentCreate, Flow, FlowRun, FlowRunCreate, TaskRun
from nbflow.states import Failed, Late, Pending, Running
from nbflow_server.events import EventBus
from nbflow_server.handlers.base import flow_run_event
from nbflow_server.services.notifications import NotificationService, Notifier
from tests.notifications.conftest import HTTPReceiver, SMTPReceiver


@pytest.fixture
def client(db_url: str) -> Iterator[EmbeddedClient]:
    opened = EmbeddedClient.from_url(db_url)
    try:
        yield opened
    finally:
        opened.close()


def _notifier(client: EmbeddedClient, smtp: SMTPReceiver | None = None) -> Notifier:
    settings = SMTPSettings(host=smtp.host, port=smtp.port) if smtp else SMTPSettings()
    return Notifier(
        client,
        AutomationStore(client.store),
        sender=Sender(settings, webhook_timeout=10),
        link=lambda run_id: panel_link("http://jupyter.test/", run_id),
        max_attempts=3,
        backoff=0.05,
    )


def _add(client: EmbeddedClient, **body: Any) -> Automation:
    rule = Automation.model_validate(AutomationCreate.model_validate(body).model_dump())
    return AutomationStore(client.store).create(rule)


def _failed_run(client: EmbeddedClient, *, tags: list[str] | None = None) -> FlowRun:
    """A run of flow `sales`, deployment `eu` (tag `prod`), failed in its cell `extract`."""
    flow = client.create_flow(Flow(name="sales"))
    deployment = client.create_deployment(
        DeploymentCreate(flow_id=flow.id, name="eu", tags=["prod"])
    )
    run = client.create_flow_run(
        FlowRunCreate(flow_id=flow.id, deployment_id=deployment.id, tags=tags or [])
    )
    client.set_flow_run_state(run.id, Pending())
    client.set_flow_run_state(run.id, Running())
    task = TaskRun(
        flow_run_id=run.id,
        name="extract",
        task_key="extract",
        state=Failed(message="KeyError: 'region'"),
    )
    client.write_task_runs([task], [(task.id, task.state)])  # type: ignore[list-item]
    client.set_flow_run_state(run.id, Failed(message="cell 2 (In [2]) raised KeyError: 'region'"))
    return client.read_flow_run(run.id)


async def _eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    for _ in range(600):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _service(notifier: Notifier, bus: EventBus) -> NotificationService:
    service = NotificationService(notifier, subscribe=bus.subscribe, interval=60)
    await service.start()
    return service


async def test_a_refused_webhook_is_retried_and_both_attempts_are_recorded(
    client: EmbeddedClient, http_receiver: HTTPReceiver
) -> None:
    http_receiver.statuses = [500]
    rule = _add(client, action="webhook", webhook_url=http_receiver.url, on_states=["FAILED"])
    bus = EventBus()
    service = await _service(_notifier(client), bus)
    try:
        run = _failed_run(client)
        bus.publish(flow_run_event(run))
        store = AutomationStore(client.store)

        async def delivered() -> Any:
            found = store.read_deliveries(automation_id=rule.id)
            return found if found and found[0].status is DeliveryStatus.DELIVERED else None

        [delivery] = await _eventually(delivered, "the second attempt to be delivered")
    finally:
        await service.stop()
    assert http_receiver.answered == [500, 200]
    assert [(a.attempt, a.ok) for a in delivery.history] == [(1, False), (2, True)]
    assert "HTTP 500" in (delivery.history[0].error or "")
    assert delivery.attempts == 2
    body = http_receiver.received[-1]["json"]
    assert body["event"] == "Failed"
    assert body["flow_run"]["id"] == str(run.id)
    assert body["flow_run"]["flow"] == "sales"
    assert body["flow_run"]["deployment"] == "eu"
    assert body["flow_run"]["url"] == f"http://jupyter.test/lab?nbflow-run={run.id}"
    assert body["failing_cell"] == {"name": "extract", "error": "KeyError: 'region'"}


async def test_a_delivery_that_keeps_failing_is_recorded_failed_after_its_attempts(
    client: EmbeddedClient, http_receiver: HTTPReceiver
) -> None:
    http_receiver.statuses = [503, 500, 502, 500]
    rule = _add(client, action="webhook", webhook_url=http_receiver.url, on_states=["FAILED"])
    bus = EventBus()
    service = await _service(_notifier(client), bus)
    try:
        bus.publish(flow_run_event(_failed_run(client)))
        store = AutomationStore(client.store)

        async def given_up() -> Any:
            found = store.read_deliveries(automation_id=rule.id)
            return found if found and found[0].status is DeliveryStatus.FAILED else None

        [delivery] = await _eventually(given_up, "the delivery to be given up")
    finally:
        await service.stop()
    assert http_receiver.answered == [503, 500, 502]  # max_attempts=3
    assert [a.ok for a in delivery.history] == [False, False, False]
    assert "HTTP 502" in (delivery.last_error or "")


async def test_an_event_seen_twice_or_after_a_restart_notifies_once(
    client: EmbeddedClient, http_receiver: HTTPReceiver
) -> None:
    rule = _add(client, action="webhook", webhook_url=http_receiver.url, on_states=["FAILED"])
    run = _failed_run(client)
    store = AutomationStore(client.store)
    for _ in range(2):  # two server lifetimes, each seeing the event twice
        bus = EventBus()
        service = await _service(_notifier(client), bus)
        try:
            bus.publish(flow_run_event(run))
            bus.publish(flow_run_event(run))

            async def idle(service: NotificationService = service) -> bool:
                done = store.read_deliveries(automation_id=rule.id)
                return bool(done) and not service.busy and done[0].status.value == "delivered"

            await _eventually(idle, "the deliveries to finish")
        finally:
            await service.stop()
    assert len(http_receiver.received) == 1
    assert len(store.read_deliveries(automation_id=rule.id)) == 1


async def test_a_pending_delivery_is_resumed_by_the_next_service(
    client: EmbeddedClient, http_receiver: HTTPReceiver
) -> None:
    # A previous server recorded the delivery, then stopped before sending it.
    rule = _add(client, action="webhook", webhook_url=http_receiver.url, on_states=["FAILED"])
    notifier = _notifier(client)
    [recorded] = notifier.on_state(_failed_run(client))
    assert recorded.status is DeliveryStatus.PENDING and http_receiver.received == []
    service = await _service(_notifier(client), EventBus())
    store = AutomationStore(client.store)
    try:

        async def delivered() -> Any:
            found = store.read_deliveries(automation_id=rule.id)
            return found[0].status is DeliveryStatus.DELIVERED

        await _eventually(delivered, "the resumed delivery")
    finally:
        await service.stop()
    assert len(http_receiver.received) == 1


async def test_an_email_reaches_a_real_smtp_server(
    client: EmbeddedClient, smtp_receiver: SMTPReceiver
) -> None:
    rule = _add(
        client,
        action="email",
        email_to=["ops@example.com", "lead@example.com"],
        on_states=["FAILED", "CRASHED"],
        match_kind="deployment",
        match_value="sales/eu",
    )
    bus = EventBus()
    service = await _service(_notifier(client, smtp_receiver), bus)
    try:
        run = _failed_run(client)
        bus.publish(flow_run_event(run))

        async def received() -> bool:
            return bool(smtp_receiver.messages)

        await _eventually(received, "the email")
        store = AutomationStore(client.store)

        async def recorded() -> bool:
            found = store.read_deliveries(automation_id=rule.id)
            return bool(found) and found[0].status is DeliveryStatus.DELIVERED

        await _eventually(recorded, "the delivery to be recorded")
    finally:
        await service.stop()
    [(sender, recipients, message)] = smtp_receiver.messages
    assert recipients == ["ops@example.com", "lead@example.com"]
    assert sender.startswith("nbflow@")
    assert message["Subject"] == f"[nbflow] sales/eu: run {run.name} Failed"
    text = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    for part in (run.name, "is Failed", "Failing cell: extract", "KeyError: 'region'",
                 f"http://jupyter.test/lab?nbflow-run={run.id}"):  # fmt: skip
        assert part in text, text


def test_rules_match_by_deployment_flow_tag_and_state(
    client: EmbeddedClient, http_receiver: HTTPReceiver
) -> None:
    url = http_receiver.url
    hits = [
        _add(client, action="webhook", webhook_url=url, on_states=["FAILED"],
             match_kind=kind, match_value=value)
        for kind, value in [("deployment", "eu"), ("deployment", "sales/eu"), ("flow", "sales"),
                            ("tag", "prod"), ("tag", "adhoc"), ("any", None)]
    ]  # fmt: skip
    misses = [
        _add(client, action="webhook", webhook_url=url, on_states=["FAILED"],
             match_kind=kind, match_value=value)
        for kind, value in [("deployment", "us"), ("flow", "billing"), ("tag", "dev")]
    ]  # fmt: skip
    _add(client, action="webhook", webhook_url=url, on_states=["COMPLETED", "LATE"])
    disabled = _add(client, action="webhook", webhook_url=url, on_states=["FAILED"], enabled=False)
    due = _notifier(client).on_state(_failed_run(client, tags=["adhoc"]))
    assert {d.automation_id for d in due} == {r.id for r in hits}
    assert not {r.id for r in misses} & {d.automation_id for d in due}
    assert disabled.id not in {d.automation_id for d in due}


def test_late_fires_late_rules(client: EmbeddedClient, http_receiver: HTTPReceiver) -> None:
    rule = _add(client, action="webhook", webhook_url=http_receiver.url, on_states=["LATE"])
    flow = client.create_flow(Flow(name="sales"))
    run = client.create_flow_run(FlowRunCreate(flow_id=flow.id))
    client.set_flow_run_state(run.id, Late(), force=True)
    [delivery] = _notifier(client).on_state(client.read_flow_run(run.id))
    assert (delivery.automation_id, delivery.event) == (rule.id, "Late")


def test_runs_longer_than_a_duration_fire_once(
    client: EmbeddedClient, http_receiver: HTTPReceiver
) -> None:
    url = http_receiver.url
    short = _add(client, action="webhook", webhook_url=url, longer_than_seconds=0.001)
    _add(client, action="webhook", webhook_url=url, longer_than_seconds=86400)
    flow = client.create_flow(Flow(name="sales"))
    running = client.create_flow_run(FlowRunCreate(flow_id=flow.id))
    client.set_flow_run_state(running.id, Pending())
    client.set_flow_run_state(running.id, Running())
    waiting = client.create_flow_run(FlowRunCreate(flow_id=flow.id))
    notifier = _notifier(client)
    [delivery] = notifier.check_long_running()
    assert (delivery.automation_id, delivery.flow_run_id) == (short.id, running.id)
    assert delivery.event == "running longer than 0.001 s"
    assert "running longer than 0.001 s" in delivery.message["text"]
    assert waiting.id != delivery.flow_run_id
    assert notifier.check_long_running() == []
    assert _notifier(client).check_long_running() == []  # a new server: still once
