"""The notification service: rules fire on run events, deliveries never block anyone.

It subscribes to the server's :class:`~nbflow_server.events.EventBus`: every published
``flow_run_state`` event whose state a rule can watch (a terminal state, Late) is queued
(the subscriber only queues: it runs on the publisher's thread, a handler's or a
service's).  One consumer task hands each event to
:meth:`Notifier.on_state` in a thread, which records the
deliveries due (before sending: once per rule, run and event); each delivery then gets
a task that attempts it in a thread, waiting an exponential backoff between attempts,
until delivered or out of attempts.  Every ``interval`` seconds the duration rules are
checked (runs Running longer than ``longer_than_seconds``).  At start, deliveries left
pending by a previous server are resumed.

The blocking work is :class:`Notifier`'s:

- :meth:`Notifier.on_state` takes a run that entered a state; for every enabled rule
  that watches the run and that state it renders the message and *records* the delivery
  (pending) -- once per rule, run and event, so a replayed event or a restarted server
  never notifies twice -- and returns the deliveries now due;
- :meth:`Notifier.check_long_running` does the same for runs Running longer than a
  rule's ``longer_than_seconds`` (event ``running longer than N s``);
- :meth:`Notifier.attempt` makes one attempt and records its outcome; the service waits
  :meth:`Notifier.delay` and calls it again while the delivery is still pending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from uuid import UUID

from nbflow.client.base import Client
from nbflow.exceptions import NotFound
from nbflow.notifications.delivery import DeliveryError, Sender
from nbflow.notifications.messages import (
    RunContext,
    failing_task,
    matches,
    render,
    state_key,
)
from nbflow.notifications.models import (
    Automation,
    DeliveryStatus,
    NotificationDelivery,
    longer_than_event,
)
from nbflow.orchestration.store.automations import AutomationStore
from nbflow.schemas import FlowRun, FlowRunFilter, TaskRunFilter
from nbflow.states import State, StateType, now
from nbflow_server.events import Subscriber
from nbflow_server.services.base import PeriodicService

__all__ = ["NotificationService", "Notifier"]

logger = logging.getLogger("nbflow.server.notifications")

_PAGE = 500


class Notifier:
    """Match runs' events to rules, record deliveries and make delivery attempts."""

    def __init__(
        self,
        client: Client,
        automations: AutomationStore,
        *,
        sender: Sender,
        link: Callable[[UUID], str | None] = lambda _id: None,
        max_attempts: int = 5,
        backoff: float = 5.0,
        max_backoff: float = 300.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts={max_attempts!r}: must be at least 1")
        self.client = client
        self.automations = automations
        self.sender = sender
        self.link = link
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        #: (rule, run) pairs whose duration event was decided already (recorded or no match).
        self._decided: set[tuple[UUID, UUID]] = set()

    # -- deciding --------------------------------------------------------------------------
    def context(self, run: FlowRun) -> RunContext:
        """Gather what a message about ``run`` names (flow, deployment, tags, failing cell)."""
        flow_name = run.flow_name or self.client.read_flow(run.flow_id).name
        deployment_name, tags = None, set(run.tags)
        if run.deployment_id is not None:
            try:
                deployment = self.client.read_deployment(run.deployment_id)
            except NotFound:
                pass
            else:
                deployment_name = deployment.name
                tags.update(deployment.tags)
        failed = None
        if run.state is not None and run.state.type in (StateType.FAILED, StateType.CRASHED):
            failed = failing_task(self.client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id])))
        return RunContext(run, flow_name, deployment_name, tags, failed, self.link(run.id))

    def _record(
        self, rules: Iterable[Automation], context: RunContext, event: str
    ) -> list[NotificationDelivery]:
        due = []
        for rule in rules:
            if not matches(rule, context):
                continue
            delivery = NotificationDelivery(
                automation_id=rule.id,
                flow_run_id=context.run.id,
                event=event,
                message=render(rule, context, event),
            )
            recorded = self.automations.record_delivery(delivery)
            if recorded is not None:
                logger.info("rule %s fires for flow run %s: %s", rule.id, context.run.id, event)
                due.append(recorded)
        return due

    def on_state(self, run: FlowRun) -> list[NotificationDelivery]:
        """Record the deliveries of the rules that ``run``'s (new) state fires; return them."""
        key = state_key(run.state)
        if key is None or run.state is None:
            return []
        rules = [r for r in self.automations.read_all(enabled_only=True) if key in r.on_states]
        if not rules:
            return []
        return self._record(rules, self.context(run), run.state.name)

    def check_long_running(self) -> list[NotificationDelivery]:
        """Record the deliveries of duration rules whose runs have run too long; return them."""
        rules = [
            r
            for r in self.automations.read_all(enabled_only=True)
            if r.longer_than_seconds is not None
        ]
        if not rules:
            return []
        due: list[NotificationDelivery] = []
        shortest = min(r.longer_than_seconds or 0.0 for r in rules)
        offset = 0
        while True:
            page = self.client.read_flow_runs(
                FlowRunFilter(state_types=[StateType.RUNNING], limit=_PAGE, offset=offset)
            )
            for run in page:
                ran = now() - (run.start_time or (run.state.timestamp if run.state else now()))
                if ran < timedelta(seconds=shortest):
                    continue
                over = [
                    r
                    for r in rules
                    if ran >= timedelta(seconds=r.longer_than_seconds or 0)
                    and (r.id, run.id) not in self._decided
                ]
                if not over:
                    continue
                context = self.context(run)
                for rule in over:
                    assert rule.longer_than_seconds is not None
                    event = longer_than_event(rule.longer_than_seconds)
                    due += self._record([rule], context, event)
                    self._decided.add((rule.id, run.id))
            if len(page) < _PAGE:
                return due
            offset += _PAGE

    def pending(self) -> list[NotificationDelivery]:
        """Return the deliveries still to be made (after a restart: resume them)."""
        return self.automations.read_deliveries(statuses=[DeliveryStatus.PENDING], limit=10_000)

    # -- delivering ------------------------------------------------------------------------
    def attempt(self, delivery: NotificationDelivery) -> NotificationDelivery | None:
        """Make one attempt and record it; None when the rule or run is gone (deleted)."""
        try:
            rule = self.automations.read(delivery.automation_id)
        except NotFound:
            return None
        error: str | None = None
        try:
            self.sender.send(rule, delivery.message)
        except DeliveryError as exc:
            error = str(exc)
        except Exception as exc:  # a bug or an odd receiver must not kill the service
            logger.exception("delivery %s failed unexpectedly", delivery.id)
            error = f"{type(exc).__name__}: {exc}"
        give_up = delivery.attempts + 1 >= self.max_attempts
        try:
            updated = self.automations.record_attempt(
                delivery.id, ok=error is None, error=error, give_up=give_up
            )
        except NotFound:
            return None
        if error is None:
            logger.info("delivery %s (%s) delivered", delivery.id, delivery.event)
        else:
            logger.warning(
                "delivery %s attempt %s/%s failed: %s",
                delivery.id,
                updated.attempts,
                self.max_attempts,
                error,
            )
        return updated

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (exponential backoff)."""
        return float(min(self.max_backoff, self.backoff * 2 ** max(0, attempts - 1)))


class NotificationService(PeriodicService):
    """Turn run events into recorded, retried notification deliveries (see the module)."""

    name = "notifications"

    def __init__(
        self,
        notifier: Notifier,
        *,
        subscribe: Callable[[Subscriber], Callable[[], None]],
        interval: float,
        workers: int = 4,
    ) -> None:
        super().__init__(interval)
        self.notifier = notifier
        self.workers = workers
        #: Threads of its own: receivers that hang never take the API's worker threads.
        self._executor: ThreadPoolExecutor | None = None
        self._subscribe = subscribe
        self._unsubscribe: Callable[[], None] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[FlowRun] | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Subscribe, resume pending deliveries, start the consumer and the duration checks."""
        self._event_loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="nbflow-notify")
        self._queue = asyncio.Queue()
        self._consumer = self._event_loop.create_task(
            self._consume(), name="notifications-consumer"
        )
        self._unsubscribe = self._subscribe(self._on_event)
        for delivery in await self._in_thread(self.notifier.pending):
            self._spawn(delivery)
        await super().start()

    async def tick(self) -> None:
        """Check the duration rules."""
        for delivery in await self._in_thread(self.notifier.check_long_running):
            self._spawn(delivery)

    async def stop(self) -> None:
        """Unsubscribe and cancel the consumer and the deliveries in progress (still pending
        in the store: the next start resumes them)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await super().stop()
        tasks = [t for t in (self._consumer, *self._deliveries) if t is not None]
        self._consumer = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._deliveries.clear()
        if self._executor is not None:
            # An attempt in progress ends by its own timeout; nothing waits for it here.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    @property
    def busy(self) -> bool:
        """Whether events are queued or deliveries are in progress."""
        queued = self._queue is not None and not self._queue.empty()
        return queued or bool(self._deliveries)

    # -- events ----------------------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        """Queue a run event a rule may watch (called on the publisher's thread)."""
        if event.get("type") != "flow_run_state" or not event.get("state"):
            return
        if state_key(State.model_validate(event["state"])) is None:
            return
        run = FlowRun.model_validate(event["flow_run"])
        loop, queue = self._event_loop, self._queue
        if loop is None or queue is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(queue.put_nowait, run)
        except RuntimeError:  # the loop closed meanwhile (shutdown)
            pass

    async def _consume(self) -> None:
        assert self._queue is not None
        while True:
            run = await self._queue.get()
            try:
                for delivery in await self._in_thread(self.notifier.on_state, run):
                    self._spawn(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("notifications for flow run %s failed", run.id)

    # -- deliveries ------------------------------------------------------------------------
    def _spawn(self, delivery: NotificationDelivery) -> None:
        assert self._event_loop is not None
        task = self._event_loop.create_task(self._deliver(delivery), name=f"delivery-{delivery.id}")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, delivery: NotificationDelivery) -> None:
        current: NotificationDelivery | None = delivery
        while current is not None and current.status is DeliveryStatus.PENDING:
            if current.attempts:
                await asyncio.sleep(self.notifier.delay(current.attempts))
            try:
                current = await self._in_thread(self.notifier.attempt, current)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("delivery %s: recording the attempt failed", delivery.id)
                return

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
