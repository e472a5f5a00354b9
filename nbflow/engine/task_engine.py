"""The task engine: run one task run through its states.

``Pending → Running → Completed`` on the happy path; ``Cached`` on a cache hit;
``AwaitingRetry → Retrying`` between attempts; ``Failed`` / ``TimedOut`` when attempts
run out; ``NotReady`` (PENDING) when an upstream task run did not complete; ``Cancelled``
when the flow run was cancelled first.  Every transition goes to a :class:`RunSink`: the
flow's recorder (batched, asynchronous) or, on a Dask worker, a collecting sink whose
contents travel back with the result.  Nothing here talks to the store, and states are
built without pydantic validation, so a task costs microseconds.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from nbflow.engine.context import TaskRunContext, task_run_context
from nbflow.engine.fingerprint import Unfingerprintable, arguments_fingerprint
from nbflow.engine.ids import fast_model, fast_uuid4
from nbflow.engine.logging import install_print_hook, run_logger_for
from nbflow.engine.options import TaskOptions
from nbflow.engine.recorder import CollectingSink, RunSink
from nbflow.engine.results import get_result_store, task_source_hash
from nbflow.engine.timeouts import sync_timeout
from nbflow.engine.tracebacks import format_user_exception
from nbflow.exceptions import NbflowError, TaskRunTimeout, UpstreamNotReady
from nbflow.schemas import TaskRun
from nbflow.states import State, StateType, now

if TYPE_CHECKING:
    from nbflow.engine.futures import TaskRunFuture

__all__ = ["DetachedOutcome", "Outcome", "TaskCall", "fast_state", "run_detached"]

log = logging.getLogger("nbflow.engine.task_engine")


_STATE_TEMPLATE = State(type=StateType.PENDING)
#: Whether State has exactly the fields built below (else fall back to the template).
_STATE_FIELDS_KNOWN = set(State.model_fields) == {
    "id",
    "type",
    "name",
    "timestamp",
    "message",
    "scheduled_time",
    "data",
}
_new = object.__new__
_setattr = object.__setattr__


def fast_state(
    type_: StateType,
    name: str,
    message: str | None = None,
    scheduled_time: Any = None,
    data: dict[str, Any] | None = None,
) -> State:
    """Build a :class:`State` without validation (the engine's hot path; inputs are trusted)."""
    if _STATE_FIELDS_KNOWN:
        state = _new(State)
        values = {
            "id": fast_uuid4(),
            "type": type_,
            "name": name,
            "timestamp": now(),
            "message": message,
            "scheduled_time": scheduled_time,
            "data": data if data is not None else {},
        }
        _setattr(state, "__dict__", values)
        _setattr(state, "__pydantic_fields_set__", set(values))
        _setattr(state, "__pydantic_extra__", None)
        _setattr(state, "__pydantic_private__", None)
        return state
    return fast_model(
        State,
        _STATE_TEMPLATE,
        {
            "id": fast_uuid4(),
            "type": type_,
            "name": name,
            "timestamp": now(),
            "message": message,
            "scheduled_time": scheduled_time,
            "data": data if data is not None else {},
        },
    )


@dataclass
class Outcome:
    """How a task run ended: its final state, its value, or the exception to raise."""

    state: State
    result: Any = None
    exception: BaseException | None = None


@dataclass
class DetachedOutcome:
    """What a task run executed elsewhere (a Dask worker) sends back to the flow."""

    task_run: TaskRun
    states: list[State]
    logs: list[Any]
    result: Any = None
    exception: BaseException | None = None


@functools.lru_cache(maxsize=1024)
def _source_hash(fn: Callable[..., Any]) -> str:
    return task_source_hash(fn)


@functools.lru_cache(maxsize=1024)
def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)


def _error_message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _resolve(value: Any, futures: dict[int, TaskRunFuture[Any]]) -> Any:
    """Replace futures inside ``value`` (top level and inside lists/tuples/sets/dicts)."""
    fut = futures.get(id(value))
    if fut is not None:
        return fut.outcome().result
    if not futures:
        return value
    if type(value) in (list, tuple, set):
        return type(value)(_resolve(v, futures) for v in value)
    if type(value) is dict:
        return {k: _resolve(v, futures) for k, v in value.items()}
    return value


@dataclass
class TaskCall:
    """One task run ready to execute: the function, its arguments, options and live record."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    options: TaskOptions
    task_run: TaskRun
    sink: RunSink
    #: Futures found in the arguments (dependencies), keyed by ``id()``.
    upstream: dict[int, TaskRunFuture[Any]] = field(default_factory=dict)
    cache_key: str | None = None
    on_cache_hit: Callable[[Any], None] | None = None
    is_cancelled: Callable[[], bool] | None = None
    #: Whether ``fn`` is a coroutine function (None: look it up).
    is_async: bool = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.is_async is None:
            self.is_async = inspect.iscoroutinefunction(self.fn)

    # -- transitions ---------------------------------------------------------------------
    def _set(self, state: State) -> State:
        self.task_run.__dict__["state"] = state
        self.sink.transition(self.task_run, state)
        return state

    def _log_error(self, message: str, exc: BaseException | None = None) -> None:
        logger = run_logger_for(self.sink, self.task_run.flow_run_id, self.task_run.id)
        if exc is not None:
            message = f"{message}\n" + format_user_exception(exc)
        logger.error(message)

    # -- phases shared by the sync and async paths ---------------------------------------
    def _begin(self) -> Outcome | None:
        """Check upstream and cancellation, resolve arguments, look up the cache."""
        if self.upstream:
            bad = [f for f in self.upstream.values() if not f.outcome().state.is_final_success]
            if bad:
                names = [f"{f.task_run.name} ({f.state.name if f.state else '?'})" for f in bad]
                exc = UpstreamNotReady(self.options.name, names)
                return Outcome(
                    self._set(fast_state(StateType.PENDING, "NotReady", str(exc))), None, exc
                )
            self.args = _resolve(self.args, self.upstream)
            self.kwargs = _resolve(self.kwargs, self.upstream)
        if self.is_cancelled is not None and self.is_cancelled():
            exc2 = NbflowError(f"task {self.options.name!r} not run: the flow run was cancelled")
            state = fast_state(StateType.CANCELLED, "Cancelled", "flow run cancelled")
            return Outcome(self._set(state), None, exc2)
        key = self.cache_key
        if key is None and self.options.uses_cache:
            key = self._compute_cache_key()
        if key is not None:
            self.task_run.cache_key = key
            expiration = self.options.cache_expiration
            if expiration is not None:
                self.task_run.cache_expiration = now() + expiration
            record = get_result_store(self.options.result_storage).read_valid(key)
            if record is not None:
                if self.on_cache_hit is not None:
                    self.on_cache_hit(record.value)
                self.task_run.end_time = now()
                data = {"cache_key": key, "result_key": key}
                return Outcome(
                    self._set(fast_state(StateType.COMPLETED, "Cached", None, None, data)),
                    record.value,
                )
        return None

    def _parameters(self) -> dict[str, Any]:
        try:
            bound = _signature(self.fn).bind(*self.args, **self.kwargs)
        except (TypeError, ValueError):
            return {"args": self.args, "kwargs": self.kwargs}
        bound.apply_defaults()
        return dict(bound.arguments)

    def _compute_cache_key(self) -> str | None:
        """Return the call's cache key, or None (and a warning) when an input has none.

        The key is the task's source hash and the arguments' fingerprints (stable across
        processes, see :mod:`nbflow.engine.fingerprint`).  An argument that cannot be
        fingerprinted means this call is neither looked up nor stored: a guessed key would
        either miss silently or, worse, hit for a different value.
        """
        parameters = self._parameters()
        if self.options.cache_key_fn is not None:
            ctx = TaskRunContext(self.task_run, self.options, self.sink, parameters, self.fn)
            return self.options.cache_key_fn(ctx, parameters)
        try:
            inputs = arguments_fingerprint(parameters)
        except Unfingerprintable as exc:
            logger = run_logger_for(self.sink, self.task_run.flow_run_id, self.task_run.id)
            logger.warning(
                "Task run %r is not cached: argument %r (%s) cannot be fingerprinted: %s. "
                "Pass data (numbers, strings, containers, arrays, dataclasses) or give the "
                "task a cache_key_fn.",
                self.task_run.name,
                exc.name,
                exc.type_name,
                exc.reason,
            )
            return None
        return hashlib.sha256(f"{_source_hash(self.fn)}:{inputs}".encode()).hexdigest()

    def _start_attempt(self) -> contextvars.Token[TaskRunContext | None]:
        run = self.task_run
        fields = run.__dict__
        fields["run_count"] += 1
        if fields["start_time"] is None:
            fields["start_time"] = now()
        name = "Running" if fields["run_count"] == 1 else "Retrying"
        self._set(fast_state(StateType.RUNNING, name))
        if self.options.log_prints:
            install_print_hook()
        return task_run_context.set(TaskRunContext(run, self.options, self.sink, fn=self.fn))

    def _succeeded(self, result: Any) -> Outcome:
        run = self.task_run
        data: dict[str, Any] = {}
        persist = self.options.persist_result
        if persist or (persist is None and run.cache_key is not None):
            key = run.cache_key or str(run.id)
            try:
                get_result_store(self.options.result_storage).write(
                    key, result, self.options.cache_expiration
                )
                data = {"result_key": key}
            except Exception as exc:
                self._log_error(f"could not persist the result of {self.options.name!r}", exc)
        run.__dict__["end_time"] = now()
        return Outcome(
            self._set(fast_state(StateType.COMPLETED, "Completed", None, None, data)), result
        )

    def _failed(self, exc: BaseException) -> float | Outcome:
        """Return the delay before the next attempt, or the final outcome."""
        run = self.task_run
        message = _error_message(exc)
        if run.run_count <= self.options.retries:
            delay = self.options.retry_delay(run.run_count)
            self._log_error(
                f"Task run {self.options.name!r} attempt {run.run_count} failed "
                f"({message}); retrying in {delay:g} s"
            )
            at = now() + timedelta(seconds=delay)
            self._set(fast_state(StateType.SCHEDULED, "AwaitingRetry", message, at))
            return delay
        run.end_time = now()
        name = "TimedOut" if isinstance(exc, TaskRunTimeout) else "Failed"
        self._log_error(f"Task run {self.options.name!r} failed: {message}", exc)
        data = {"exception_type": type(exc).__name__}
        return Outcome(
            self._set(fast_state(StateType.FAILED, name, message, None, data)), None, exc
        )

    def _interrupted(self, exc: BaseException) -> None:
        self.task_run.end_time = now()
        if isinstance(exc, KeyboardInterrupt):
            self._set(fast_state(StateType.CANCELLED, "Cancelled", "interrupted"))
        else:
            self._set(fast_state(StateType.CRASHED, "Crashed", _error_message(exc)))

    def _timeout(self) -> TaskRunTimeout:
        return TaskRunTimeout(self.options.name, self.options.timeout_seconds or 0)

    # -- execution -----------------------------------------------------------------------
    def run_sync(self) -> Outcome:
        """Run a sync task function through its states in this thread."""
        early = self._begin()
        if early is not None:
            return early
        fn, timeout = self.fn, self.options.timeout_seconds
        while True:
            token = self._start_attempt()
            started = time.perf_counter()
            try:
                if timeout is None:
                    result = fn(*self.args, **self.kwargs)
                else:
                    with sync_timeout(timeout, self._timeout):
                        result = fn(*self.args, **self.kwargs)
            except Exception as exc:
                next_step = self._failed(exc)
            except BaseException as exc:
                self._interrupted(exc)
                raise
            else:
                return self._succeeded(result)
            finally:
                self.task_run.__dict__["total_run_time"] += time.perf_counter() - started
                task_run_context.reset(token)
            if isinstance(next_step, Outcome):
                return next_step
            self._sleep(next_step)

    def _sleep(self, delay: float) -> None:
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            if self.is_cancelled is not None and self.is_cancelled():
                return
            time.sleep(min(left, 0.1))

    async def run_async(self) -> Outcome:
        """Run an async task function through its states on the running loop."""
        for fut in self.upstream.values():
            await fut.await_state()
        early = self._begin()
        if early is not None:
            return early
        timeout = self.options.timeout_seconds
        while True:
            token = self._start_attempt()
            started = time.perf_counter()
            try:
                try:
                    async with asyncio.timeout(timeout):
                        result = await self.fn(*self.args, **self.kwargs)
                except TimeoutError as exc:
                    if timeout is None:
                        raise
                    raise self._timeout() from exc
            except Exception as exc:
                next_step = self._failed(exc)
            except BaseException as exc:
                self._interrupted(exc)
                raise
            else:
                return self._succeeded(result)
            finally:
                self.task_run.__dict__["total_run_time"] += time.perf_counter() - started
                task_run_context.reset(token)
            if isinstance(next_step, Outcome):
                return next_step
            await asyncio.sleep(next_step)

    # -- running elsewhere ---------------------------------------------------------------
    def detach(self) -> TaskCall:
        """Return a picklable copy with resolved arguments and a collecting sink."""
        args = _resolve(self.args, self.upstream)
        kwargs = _resolve(self.kwargs, self.upstream)
        return TaskCall(
            self.fn,
            args,
            kwargs,
            self.options,
            self.task_run.model_copy(),
            CollectingSink(),
            cache_key=self.cache_key,
        )

    def absorb(self, detached: DetachedOutcome) -> Outcome:
        """Replay what ran elsewhere into this call's record and sink; return the outcome."""
        run, remote = self.task_run, detached.task_run
        for name in (
            "run_count",
            "start_time",
            "end_time",
            "total_run_time",
            "cache_key",
            "cache_expiration",
        ):
            setattr(run, name, getattr(remote, name))
        for record in detached.logs:
            self.sink.log(record)
        for state in detached.states:
            self._set(state)
        assert run.state is not None
        return Outcome(run.state, detached.result, detached.exception)


def run_detached(call: TaskCall) -> DetachedOutcome:
    """Run ``call`` here (a Dask worker) and return its states, logs and result."""
    sink = call.sink
    assert isinstance(sink, CollectingSink)
    outcome = asyncio.run(call.run_async()) if call.is_async else call.run_sync()
    exception = outcome.exception
    if exception is not None:
        try:
            import cloudpickle

            cloudpickle.dumps(exception)
        except Exception:
            exception = NbflowError(_error_message(exception))
    return DetachedOutcome(call.task_run, sink.states, sink.logs, outcome.result, exception)
