"""``@task``: a function whose calls are task runs (retries, timeout, caching, logs)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from nbflow.engine.context import current_flow_run
from nbflow.engine.futures import TaskRunFuture
from nbflow.engine.options import CacheKeyFn, TaskOptions
from nbflow.engine.task_engine import Outcome, TaskCall
from nbflow.exceptions import NbflowError, ValidationError
from nbflow.schemas import Log, TaskRun
from nbflow.states import State

__all__ = ["Task", "task", "unmapped"]

P = ParamSpec("P")
R = TypeVar("R")


class unmapped:
    """Mark a ``Task.map`` argument as a constant passed whole to every mapped run."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _NullSink:
    """A sink for task calls outside any flow run: nothing is recorded."""

    def transition(self, task_run: TaskRun, state: State) -> None:
        """Drop the transition."""

    def log(self, record: Log) -> None:
        """Drop the record."""


def _raise_or_return(outcome: Outcome) -> Any:
    if outcome.exception is not None:
        raise outcome.exception
    return outcome.result


class Task(Generic[P, R]):
    """A function run as task runs: call it, ``submit`` it or ``map`` it inside a flow."""

    def __init__(self, fn: Callable[P, R], options: TaskOptions) -> None:
        self.fn = fn
        self.options = options
        self.name = options.name
        self.task_key = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', self.name)}"
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"Task({self.name!r})"

    def with_options(self, **changes: Any) -> Task[P, R]:
        """Return a copy of this task with some options changed."""
        values = {f: getattr(self.options, f) for f in self.options.__dataclass_fields__}
        values.update(changes)
        if "tags" in changes:
            values["tags"] = tuple(changes["tags"])
        return Task(self.fn, TaskOptions(**values))

    # -- calling -------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the task now as a task run (an ``async def`` task returns a coroutine).

        Inside a flow the run is recorded; outside any flow the task still gets retries,
        timeout and caching but nothing is recorded.  A failed run raises its exception.
        """
        engine = current_flow_run()
        if self.is_async:
            return self._acall(args, kwargs)  # type: ignore[return-value]
        if engine is None:
            return _raise_or_return(self._detached_call(args, kwargs).run_sync())  # type: ignore[no-any-return]
        call = engine._call(
            self.fn, args, kwargs, self.options, task_key=self.task_key, is_async=False
        )
        return _raise_or_return(engine.run_call(call))  # type: ignore[no-any-return]

    async def _acall(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        engine = current_flow_run()
        if engine is None:
            return _raise_or_return(await self._detached_call(args, kwargs).run_async())
        call = engine._call(self.fn, args, kwargs, self.options, task_key=self.task_key)
        return _raise_or_return(await engine.arun_call(call))

    def _detached_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TaskCall:
        run = TaskRun(flow_run_id=None, name=self.name, task_key=self.task_key)
        return TaskCall(self.fn, args, kwargs, self.options, run, _NullSink())

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> TaskRunFuture[R]:
        """Hand a task run to the flow's task runner and return its future (inside a flow)."""
        engine = current_flow_run()
        if engine is None:
            raise NbflowError(
                f"{self.name}.submit() needs a running flow: call it inside a @flow function "
                "(or call the task directly)"
            )
        return engine.submit(
            self.fn, args, kwargs, self.options, task_key=self.task_key, is_async=self.is_async
        )

    def map(self, *args: Any, **kwargs: Any) -> list[TaskRunFuture[R]]:
        """Submit one task run per element of the iterable arguments (``unmapped(x)``: constant)."""
        iterables: dict[int | str, list[Any]] = {}
        constants: dict[int | str, Any] = {}
        pairs: list[tuple[int | str, Any]] = [*enumerate(args), *kwargs.items()]
        for key, value in pairs:
            if isinstance(value, TaskRunFuture):
                value = value.result()
            if isinstance(value, unmapped):
                constants[key] = value.value
            elif isinstance(value, Iterable) and not isinstance(value, str | bytes | dict):
                iterables[key] = list(value)
            else:
                constants[key] = value
        if not iterables:
            raise ValidationError(
                "map arguments", args, "no iterable to map over", "pass a list (or unmapped(x))"
            )
        lengths = {k: len(v) for k, v in iterables.items()}
        if len(set(lengths.values())) > 1:
            raise ValidationError(
                "map arguments", lengths, "iterables have different lengths", "pass equal lengths"
            )
        n = next(iter(lengths.values()))
        futures = []
        for i in range(n):
            values = {**constants, **{k: v[i] for k, v in iterables.items()}}
            call_args = [values[k] for k in range(len(args))]
            call_kwargs = {k: values[k] for k in kwargs}
            futures.append(self.submit(*call_args, **call_kwargs))  # type: ignore[arg-type]
        return futures


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *,
    name: str | None = None,
    retries: int = 0,
    retry_delay_seconds: float | Sequence[float] = 0,
    retry_jitter_factor: float | None = None,
    timeout_seconds: float | None = None,
    cache_key_fn: CacheKeyFn | None = None,
    cache_policy: Literal["inputs"] | None = None,
    cache_expiration: timedelta | None = None,
    persist_result: bool | None = None,
    result_storage: str | None = None,
    tags: Iterable[str] = (),
    log_prints: bool = False,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    retry_delay_seconds: float | Sequence[float] = 0,
    retry_jitter_factor: float | None = None,
    timeout_seconds: float | None = None,
    cache_key_fn: CacheKeyFn | None = None,
    cache_policy: Literal["inputs"] | None = None,
    cache_expiration: timedelta | None = None,
    persist_result: bool | None = None,
    result_storage: str | None = None,
    tags: Iterable[str] = (),
    log_prints: bool = False,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Turn a function (sync or ``async def``) into a :class:`Task`."""

    def decorate(func: Callable[P, R]) -> Task[P, R]:
        options = TaskOptions(
            name=name or str(getattr(func, "__name__", "task")),
            retries=retries,
            retry_delay_seconds=retry_delay_seconds,
            retry_jitter_factor=retry_jitter_factor,
            timeout_seconds=timeout_seconds,
            cache_policy=cache_policy,
            cache_key_fn=cache_key_fn,
            cache_expiration=cache_expiration,
            persist_result=persist_result,
            result_storage=str(result_storage) if result_storage is not None else None,
            tags=tuple(tags),
            log_prints=log_prints,
        )
        return Task(func, options)

    return decorate(fn) if fn is not None else decorate
