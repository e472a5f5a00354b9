"""``FlowRunEngine``: one flow run from Running to its terminal state.

The single code path shared by ``@flow`` calls, the ``%%flow``/``%%task`` magics
(``mode="interactive"``) and ``nbflow execute`` (``mode="batch"``): create or load the
run, propose Running through the orchestration gate, run task calls (directly or through
a task runner), then propose the terminal state and flush the recorder so the store holds
every task run and log.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal
from uuid import UUID

from pydantic_core import to_jsonable_python

from nbflow.client import get_client
from nbflow.client.base import Client
from nbflow.engine import events, loop
from nbflow.engine.context import FlowRunContext, flow_run_context
from nbflow.engine.futures import TaskRunFuture
from nbflow.engine.ids import fast_model, fast_uuid4
from nbflow.engine.options import TaskOptions
from nbflow.engine.recorder import Recorder, get_recorder
from nbflow.engine.task_engine import Outcome, TaskCall, fast_state
from nbflow.engine.task_runners import TaskRunner, resolve_task_runner
from nbflow.exceptions import NbflowError, TransitionRejected
from nbflow.schemas import (
    Flow,
    FlowRun,
    FlowRunCreate,
    Log,
    OrchestrationResult,
    SetStateStatus,
    TaskRun,
)
from nbflow.states import Cancelled, Completed, Failed, Pending, Running, State, StateType, now

__all__ = ["FlowRunEngine", "FlowRunSink", "Mode"]

log = logging.getLogger("nbflow.engine.flow_engine")

Mode = Literal["python", "interactive", "batch"]

_TASK_RUN_TEMPLATE = TaskRun(flow_run_id=None, name="task", task_key="task")

#: Seconds between heartbeats of interactive and batch runs.
HEARTBEAT_SECONDS = 15.0

#: How long ``finish`` waits for the recorder to reach the store.
FLUSH_TIMEOUT = 120.0


class FlowRunSink:
    """The flow side's sink: enqueue to the recorder and tell event subscribers."""

    __slots__ = ("_put", "flow_run_id")

    def __init__(self, recorder: Recorder, flow_run_id: UUID) -> None:
        self._put = recorder._queue.put
        self.flow_run_id = flow_run_id

    def transition(self, task_run: TaskRun, state: State) -> None:
        """Record ``state`` of ``task_run`` and emit a :class:`TaskRunEvent`."""
        self._put((task_run, state))
        if events._subscribers:
            events.emit(events.TaskRunEvent(self.flow_run_id, task_run.model_copy(), state))

    def log(self, record: Log) -> None:
        """Record a log line."""
        self._put(record)


def _collect_futures(value: Any, found: dict[int, TaskRunFuture[Any]], depth: int = 0) -> None:
    if isinstance(value, TaskRunFuture):
        found[id(value)] = value
    elif depth < 3 and type(value) in (list, tuple, set):
        for item in value:
            _collect_futures(item, found, depth + 1)
    elif depth < 3 and type(value) is dict:
        for item in value.values():
            _collect_futures(item, found, depth + 1)


class FlowRunEngine:
    """Drive one flow run: propose its states, run its task runs, record everything."""

    def __init__(
        self,
        client: Client,
        flow_run: FlowRun,
        *,
        mode: Mode = "python",
        task_runner: TaskRunner | None = None,
        log_prints: bool = False,
        persist_result: bool | None = None,
        result_storage: str | None = None,
    ) -> None:
        self.client = client
        self.flow_run = flow_run
        self.mode = mode
        self.log_prints = log_prints
        #: Defaults for tasks of this run that leave these options unset.
        self.persist_result = persist_result
        self.result_storage = result_storage
        self.task_runner = task_runner or resolve_task_runner(None)
        self.recorder = get_recorder(client)
        self.sink = FlowRunSink(self.recorder, flow_run.id)
        self.orchestration: OrchestrationResult | None = None
        self.final_state: State | None = None
        self._cancelled = threading.Event()
        self._stopped = threading.Event()
        self._futures: list[TaskRunFuture[Any]] = []
        self._prune_at = 1000
        self._keys: dict[str, itertools.count[int]] = {}
        self._finish_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        *,
        flow_name: str | None = None,
        parameters: dict[str, Any] | None = None,
        parameters_schema: dict[str, Any] | None = None,
        source: str | None = None,
        description: str | None = None,
        flow_run_id: UUID | None = None,
        flow_run_name: str | None = None,
        mode: Mode = "python",
        client: Client | None = None,
        task_runner: TaskRunner | type[TaskRunner] | str | None = None,
        tags: Sequence[str] = (),
        log_prints: bool = False,
        persist_result: bool | None = None,
        result_storage: str | None = None,
        heartbeat_seconds: float | None = None,
    ) -> FlowRunEngine:
        """Create the flow and its run (or load ``flow_run_id``), propose Running, return the engine.

        Raises :class:`TransitionRejected` when the gate refuses Running (REJECT/ABORT);
        a WAIT answer is honoured by sleeping and proposing again.  In ``interactive`` and
        ``batch`` mode (or with ``heartbeat_seconds``) a thread heartbeats the run and
        cancels the engine when the run becomes Cancelling.
        """
        client = client or get_client()
        if flow_run_id is not None:
            flow_run = client.read_flow_run(flow_run_id)
        else:
            if not flow_name:
                raise NbflowError("FlowRunEngine.start needs flow_name or flow_run_id")
            flow = client.create_flow(
                Flow(
                    name=flow_name,
                    description=description,
                    parameters_schema=parameters_schema or {},
                    source=source,
                )
            )
            flow_run = client.create_flow_run(
                FlowRunCreate(
                    flow_id=flow.id,
                    name=flow_run_name,
                    parameters=to_jsonable_python(parameters or {}, fallback=repr),
                    tags=list(tags),
                    mode=mode,
                    # Claimed by this process at creation: the policy lets only a
                    # claimed (Pending) run enter Running.
                    state=Pending(message=f"claimed by the {mode} process that runs it"),
                )
            )
        engine = cls(
            client,
            flow_run,
            mode=mode,
            task_runner=resolve_task_runner(task_runner),
            log_prints=log_prints,
            persist_result=persist_result,
            result_storage=result_storage,
        )
        engine.propose(Running())
        engine.task_runner.start()
        if heartbeat_seconds is None and mode != "python":
            heartbeat_seconds = HEARTBEAT_SECONDS
        if heartbeat_seconds:
            engine._start_heartbeat(heartbeat_seconds)
        return engine

    def _start_heartbeat(self, interval: float) -> None:
        thread = threading.Thread(
            target=self._heartbeat, args=(interval,), name="nbflow-heartbeat", daemon=True
        )
        thread.start()

    def _heartbeat(self, interval: float) -> None:
        # Tells monitors the process is alive, and notices a cancel requested elsewhere
        # (the run turned Cancelling): then no new task run starts.
        while not self._stopped.wait(interval):
            try:
                self.client.heartbeat(self.flow_run.id)
                current = self.client.read_flow_run(self.flow_run.id).state
            except Exception:
                log.warning("heartbeat for flow run %s failed", self.flow_run.id, exc_info=True)
                continue
            if current is not None and current.type is StateType.CANCELLING:
                self.cancel()

    def propose(self, state: State) -> State:
        """Propose a flow-run state; sleep and retry on WAIT; raise on REJECT/ABORT."""
        while True:
            result = self.client.set_flow_run_state(self.flow_run.id, state)
            self.orchestration = result
            if result.status is SetStateStatus.ACCEPT:
                accepted = result.state or state
                self.flow_run.state = accepted
                if events._subscribers:
                    events.emit(events.FlowRunEvent(self.flow_run.id, accepted))
                return accepted
            if result.status is SetStateStatus.WAIT:
                time.sleep(max(result.delay_seconds or 0.0, 0.05))
                state = State(
                    type=state.type, name=state.name, message=state.message, data=state.data
                )
                continue
            current = self.client.read_flow_run(self.flow_run.id).state
            raise TransitionRejected(
                self.flow_run.id,
                str(state),
                str(current) if current else None,
                result.reason or result.status.value,
            )

    @contextmanager
    def activate(self) -> Iterator[FlowRunEngine]:
        """Bind ``@task`` calls and ``get_run_logger()`` in this block to this run."""
        token = flow_run_context.set(FlowRunContext(self))
        try:
            yield self
        finally:
            flow_run_context.reset(token)

    def cancel(self) -> None:
        """Ask the run to stop: no new task run starts, and the run ends Cancelled."""
        self._cancelled.set()

    @property
    def is_cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled.is_set()

    @property
    def futures(self) -> list[TaskRunFuture[Any]]:
        """Futures submitted in this run that are running or did not complete."""
        return list(self._futures)

    def unconsumed_failures(self) -> list[TaskRunFuture[Any]]:
        """Futures that ended not Completed and that the flow body never looked at."""
        return [
            f
            for f in self._futures
            if not f.consumed and f.done() and not f.outcome().state.is_final_success
        ]

    def finish(self, state: State | None = None) -> State:
        """End the run: wait for task runs, flush the recorder, propose the terminal state.

        With ``state=None`` the state is computed: Cancelled after :meth:`cancel`, Failed
        when a submitted task run ended not Completed and nobody consumed it, otherwise
        Completed.  Calling it again returns the state of the first call.
        """
        with self._finish_lock:
            if self.final_state is not None:
                return self.final_state
            self._stopped.set()
            try:
                self.task_runner.shutdown()
            except Exception:
                log.exception("task runner %r failed to shut down", self.task_runner)
            for fut in self._futures:
                try:
                    fut.outcome()
                except BaseException as exc:
                    log.warning("task run %s ended abnormally: %r", fut.task_run_id, exc)
            if state is None:
                state = self._computed_final_state()
            # Task runs reach the store before the run's terminal state: that state closes
            # out every task run still open (nbflow.orchestration.store.flow_runs).
            if not self.recorder.flush(FLUSH_TIMEOUT):
                log.warning("recorder did not flush within %s s", FLUSH_TIMEOUT)
            try:
                final = self.propose(state)
            except TransitionRejected as exc:
                final = self._resolve_rejection(exc, state)
            self.final_state = final
            return final

    def ended_elsewhere(self, state: State) -> State:
        """Adopt a terminal state another process gave the run (a cancel, a monitor).

        Nothing is proposed: the run already ended.  Task runs still recorded reach the
        store, where the run's close-out has given open ones their terminal state.
        """
        with self._finish_lock:
            if self.final_state is None:
                self._stopped.set()
                self.recorder.flush(FLUSH_TIMEOUT)
                self.flow_run.state = state
                self.final_state = state
            return self.final_state

    def _computed_final_state(self) -> State:
        if self.is_cancelled:
            return Cancelled(message="cancelled on request")
        failed = self.unconsumed_failures()
        if failed:
            names = ", ".join(f"{f.task_run.name} ({f.state})" for f in failed[:5])
            more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
            return Failed(message=f"{len(failed)} task run(s) did not complete: {names}{more}")
        return Completed()

    def _resolve_rejection(self, exc: TransitionRejected, state: State) -> State:
        current = self.client.read_flow_run(self.flow_run.id).state
        if current is not None and current.type is StateType.CANCELLING:
            # Cancelled from outside while we ran: finish the cancellation.
            return self.propose(Cancelled(message="cancelled while running"))
        log.warning("flow run %s: terminal state %s refused: %s", self.flow_run.id, state, exc)
        self.flow_run.state = current
        return current or state

    def failure(self) -> BaseException | None:
        """The exception of the first failed, unconsumed future (what a flow call raises)."""
        by_id = {f.task_run_id: f for f in self._futures}
        for fut in self.unconsumed_failures():
            # Raise the root cause, not the NotReady of a task downstream of it.
            seen = set()
            while (
                fut.state is not None
                and fut.state.name == "NotReady"
                and fut.task_run_id not in seen
            ):
                seen.add(fut.task_run_id)
                failed = [by_id[u] for u in fut.task_run.upstream if u in by_id]
                failed = [f for f in failed if not f.outcome().state.is_final_success]
                if not failed:
                    break
                fut = failed[0]
            return fut.outcome().exception or NbflowError(f"task run {fut.task_run.name} failed")
        return None

    # -- task runs -----------------------------------------------------------------------
    def _call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
        *,
        task_key: str | None = None,
        inputs: Iterable[str] = (),
        outputs: Iterable[str] = (),
        upstream: Iterable[UUID] = (),
        cache_key: str | None = None,
        on_cache_hit: Callable[[Any], None] | None = None,
        is_async: bool | None = None,
    ) -> TaskCall:
        if (self.persist_result is not None and options.persist_result is None) or (
            self.result_storage is not None and options.result_storage is None
        ):
            options = dataclasses.replace(
                options,
                persist_result=(
                    options.persist_result
                    if options.persist_result is not None
                    else self.persist_result
                ),
                result_storage=options.result_storage or self.result_storage,
            )
        found: dict[int, TaskRunFuture[Any]] = {}
        if args:
            _collect_futures(args, found)
        if kwargs:
            _collect_futures(kwargs, found)
        key = task_key or options.name
        counter = self._keys.get(key)
        if counter is None:
            counter = self._keys.setdefault(key, itertools.count())
        upstream_ids = [f.task_run_id for f in found.values()]
        upstream_ids.extend(upstream)
        stamp = now()
        run = fast_model(
            TaskRun,
            _TASK_RUN_TEMPLATE,
            {
                "id": fast_uuid4(),
                "flow_run_id": self.flow_run.id,
                "name": options.name,
                "task_key": key,
                "dynamic_key": next(counter),
                "upstream": upstream_ids,
                "inputs": list(inputs),
                "outputs": list(outputs),
                "tags": list(options.tags),
                "created": stamp,
                "updated": stamp,
            },
        )
        return TaskCall(
            fn,
            args,
            kwargs,
            options,
            run,
            self.sink,
            found,
            cache_key,
            on_cache_hit,
            self._cancelled.is_set,
            is_async,  # type: ignore[arg-type]  # None: TaskCall looks it up
        )

    def run_call(self, call: TaskCall) -> Outcome:
        """Run ``call`` in this thread (async functions on the background loop) and wait."""
        if call.upstream:
            for fut in call.upstream.values():
                fut.consumed = True
                fut.wait()
        if call.is_async:
            return loop.run_coroutine(call.run_async())
        return call.run_sync()

    def run_task(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        options: TaskOptions | None = None,
        task_key: str | None = None,
        inputs: Iterable[str] = (),
        outputs: Iterable[str] = (),
        upstream: Iterable[UUID] = (),
        cache_key: str | None = None,
        on_cache_hit: Callable[[Any], None] | None = None,
    ) -> tuple[TaskRun, State, Any]:
        """Run ``fn`` as a task run of this flow run, here and now; return (run, state, result).

        ``result`` is the return value, or the exception when the run did not complete.
        With ``cache_key`` the result is persisted under that key; a later run with the
        same key and an unexpired result is ``Cached``: ``fn`` is not called,
        ``on_cache_hit(value)`` is, and ``result`` is the stored value.
        """
        options = options or TaskOptions(name=getattr(fn, "__name__", "task"))
        call = self._call(
            fn,
            args,
            kwargs or {},
            options,
            task_key=task_key,
            inputs=inputs,
            outputs=outputs,
            upstream=upstream,
            cache_key=cache_key,
            on_cache_hit=on_cache_hit,
        )
        outcome = self.run_call(call)
        value = outcome.exception if outcome.exception is not None else outcome.result
        return call.task_run, outcome.state, value

    async def arun_call(self, call: TaskCall) -> Outcome:
        """Async twin of :meth:`run_call` (async functions run on the caller's loop)."""
        for fut in call.upstream.values():
            fut.consumed = True
        if call.is_async:
            return await call.run_async()
        for fut in call.upstream.values():
            await fut.await_state()
        return call.run_sync()

    def submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
        *,
        task_key: str | None = None,
        is_async: bool | None = None,
    ) -> TaskRunFuture[Any]:
        """Hand a task run to the task runner; return its future."""
        call = self._call(fn, args, kwargs, options, task_key=task_key, is_async=is_async)
        for fut in call.upstream.values():
            fut.consumed = True
        call._set(fast_state(StateType.PENDING, "Pending"))
        future: TaskRunFuture[Any] = TaskRunFuture(call.task_run, self.task_runner.submit(call))
        futures = self._futures
        futures.append(future)
        if len(futures) >= self._prune_at:
            self._prune()
        return future

    def _prune(self) -> None:
        # Keep only futures that may still matter at finish (running or not Completed), so
        # a flow of many small tasks does not hold every finished run (and the GC's work).
        with self._finish_lock:
            self._futures = kept = [
                f for f in self._futures if not f.done() or not f.outcome().state.is_final_success
            ]
            self._prune_at = max(1000, 2 * len(kept))
