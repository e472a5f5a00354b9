"""``@flow``: a function whose calls are flow runs, recorded in the store."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from nbflow.engine.context import current_flow_run
from nbflow.engine.flow_engine import FlowRunEngine
from nbflow.engine.parameters import ParameterModel
from nbflow.engine.task_runners import TaskRunner, resolve_task_runner
from nbflow.engine.timeouts import sync_timeout
from nbflow.exceptions import NbflowError
from nbflow.states import Cancelled, Crashed, Failed, State, TimedOut

__all__ = ["Flow", "FlowRunTimeout", "flow"]

P = ParamSpec("P")
R = TypeVar("R")


class FlowRunTimeout(NbflowError, TimeoutError):
    """A flow run exceeded its ``timeout_seconds``."""

    def __init__(self, flow_name: str, seconds: float) -> None:
        self.flow_name, self.seconds = flow_name, seconds
        super().__init__(f"flow {flow_name!r} exceeded its timeout of {seconds:g} s")


def _message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Flow(Generic[P, R]):
    """A function run as flow runs: each call creates, runs and records one flow run."""

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        task_runner: TaskRunner | type[TaskRunner] | str | None = None,
        timeout_seconds: float | None = None,
        log_prints: bool = False,
        persist_result: bool | None = None,
        result_storage: str | None = None,
        tags: Iterable[str] = (),
    ) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "flow").replace("_", "-")
        self.description = description or inspect.getdoc(fn)
        self.task_runner = task_runner
        self.timeout_seconds = timeout_seconds
        self.log_prints = log_prints
        self.persist_result = persist_result
        self.result_storage = result_storage
        self.tags = list(tags)
        self.is_async = inspect.iscoroutinefunction(fn)
        self._parameters = ParameterModel(fn)
        self._schema: dict[str, Any] | None = None
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"Flow({self.name!r})"

    @property
    def source(self) -> str | None:
        """``file.py:function`` where the flow is defined, when known."""
        try:
            path = inspect.getsourcefile(self.fn)
        except TypeError:
            return None
        return f"{path}:{self.fn.__name__}" if path else None

    def parameters_schema(self) -> dict[str, Any]:
        """Return the JSON schema of the parameters (stored on :class:`schemas.Flow`)."""
        if self._schema is None:
            self._schema = self._parameters.schema()
        return self._schema

    def validate_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Coerce and validate ``parameters``; raise :class:`ParameterError` naming the problem."""
        return self._parameters.validate(parameters)

    def _runner(self) -> TaskRunner:
        runner = resolve_task_runner(self.task_runner)
        # A fresh runner per run: flow runs (and nested ones) never share a pool.
        return runner.duplicate() if isinstance(self.task_runner, TaskRunner) else runner

    def _start(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[FlowRunEngine, tuple[Any, ...], dict[str, Any]]:
        try:
            bound = self._parameters.bind(args, kwargs)
        except TypeError as exc:
            raise NbflowError(f"flow {self.name!r} called with bad arguments: {exc}") from None
        parameters = self.validate_parameters(bound)
        parent = current_flow_run()
        tags = [*self.tags, f"parent:{parent.flow_run.id}"] if parent else self.tags
        engine = FlowRunEngine.start(
            flow_name=self.name,
            parameters=parameters,
            parameters_schema=self.parameters_schema(),
            source=self.source,
            description=self.description,
            mode="python",
            task_runner=self._runner(),
            tags=tags,
            log_prints=self.log_prints,
            persist_result=self.persist_result,
            result_storage=self.result_storage,
        )
        call_args, call_kwargs = self._parameters.call_arguments(parameters)
        return engine, call_args, call_kwargs

    def _timeout(self) -> FlowRunTimeout:
        return FlowRunTimeout(self.name, self.timeout_seconds or 0)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the flow (an ``async def`` flow returns a coroutine) and return its result.

        Raises the body's exception when it failed, the first failed task run's exception
        when an unconsumed submitted task run did not complete, :class:`FlowRunTimeout`
        on timeout.
        """
        if self.is_async:
            return self._acall(args, kwargs)  # type: ignore[return-value]
        engine, call_args, call_kwargs = self._start(args, kwargs)
        with engine.activate():
            try:
                with sync_timeout(self.timeout_seconds, self._timeout):
                    result = self.fn(*call_args, **call_kwargs)
            except BaseException as exc:
                self._end_early(engine, exc)
                raise
        return self._finish(engine, result)  # type: ignore[no-any-return]

    async def _acall(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        engine, call_args, call_kwargs = await asyncio.to_thread(self._start, args, kwargs)
        with engine.activate():
            try:
                try:
                    async with asyncio.timeout(self.timeout_seconds):
                        result = await self.fn(*call_args, **call_kwargs)  # type: ignore[misc]
                except TimeoutError as exc:
                    if self.timeout_seconds is None:
                        raise
                    raise self._timeout() from exc
            except BaseException as exc:
                await asyncio.to_thread(self._end_early, engine, exc)
                raise
        final = await asyncio.to_thread(engine.finish)
        return self._check(engine, final, result)

    def _end_early(self, engine: FlowRunEngine, exc: BaseException) -> None:
        state = self._state_for(exc)
        if not isinstance(exc, Exception):
            # Interrupted or crashing: queued task runs must not start any more.
            engine.cancel()
        engine.finish(state)

    def _state_for(self, exc: BaseException) -> State:
        if isinstance(exc, FlowRunTimeout):
            return TimedOut(message=str(exc))
        if isinstance(exc, Exception):
            return Failed(message=_message(exc))
        if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
            return Cancelled(message=_message(exc) if str(exc) else type(exc).__name__)
        return Crashed(message=_message(exc))

    def _finish(self, engine: FlowRunEngine, result: Any) -> Any:
        return self._check(engine, engine.finish(), result)

    def _check(self, engine: FlowRunEngine, final: State, result: Any) -> Any:
        if final.is_final_success:
            return result
        error = engine.failure()
        if error is not None:
            raise error
        raise NbflowError(f"flow run {engine.flow_run.id} ended {final}")


@overload
def flow(fn: Callable[P, R], /) -> Flow[P, R]: ...


@overload
def flow(
    *,
    name: str | None = None,
    description: str | None = None,
    task_runner: TaskRunner | type[TaskRunner] | str | None = None,
    timeout_seconds: float | None = None,
    log_prints: bool = False,
    persist_result: bool | None = None,
    result_storage: str | None = None,
    tags: Iterable[str] = (),
) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    task_runner: TaskRunner | type[TaskRunner] | str | None = None,
    timeout_seconds: float | None = None,
    log_prints: bool = False,
    persist_result: bool | None = None,
    result_storage: str | None = None,
    tags: Iterable[str] = (),
) -> Flow[P, R] | Callable[[Callable[P, R]], Flow[P, R]]:
    """Turn a function (sync or ``async def``) into a :class:`Flow`."""

    def decorate(func: Callable[P, R]) -> Flow[P, R]:
        return Flow(
            func,
            name=name,
            description=description,
            task_runner=task_runner,
            timeout_seconds=timeout_seconds,
            log_prints=log_prints,
            persist_result=persist_result,
            result_storage=result_storage,
            tags=tags,
        )

    return decorate(fn) if fn is not None else decorate
