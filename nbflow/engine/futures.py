"""``TaskRunFuture``: the handle ``Task.submit()`` returns."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar
from uuid import UUID

from nbflow.schemas import TaskRun
from nbflow.states import State

if TYPE_CHECKING:
    from nbflow.engine.task_engine import Outcome

__all__ = ["OutcomeFuture", "TaskRunFuture"]

T = TypeVar("T")


class OutcomeFuture(Protocol):
    """What a task runner hands back: a ``concurrent.futures.Future``-like of an Outcome."""

    def result(self, timeout: float | None = None) -> Outcome:
        """Wait for the outcome (``concurrent.futures.TimeoutError`` after ``timeout``)."""

    def done(self) -> bool:
        """Whether the outcome is there."""

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        """Call ``fn(future)`` once done (at once when already done)."""


class TaskRunFuture(Generic[T]):
    """A task run executing in a task runner: its live state and, once done, its result."""

    __slots__ = ("_future", "consumed", "task_run")

    def __init__(self, task_run: TaskRun, future: OutcomeFuture) -> None:
        self.task_run = task_run
        self._future = future
        #: Whether the flow body looked at the outcome (``result``/``wait``); a failed
        #: future nobody consumed fails the flow run.
        self.consumed = False

    def __repr__(self) -> str:
        return f"TaskRunFuture({self.task_run.name!r}, {self.task_run_id}, {self.state})"

    @property
    def task_run_id(self) -> UUID:
        """The id of the task run."""
        return self.task_run.id

    @property
    def state(self) -> State | None:
        """The latest state of the task run."""
        return self.task_run.state

    def done(self) -> bool:
        """Whether the task run has finished (or will not run)."""
        return self._future.done()

    def _run_if_queued(self) -> None:
        # A queued run nobody started yet runs in the waiting thread (see task_runners).
        steal = getattr(self._future, "steal", None)
        if steal is not None and not self._future.done():
            steal()

    def outcome(self, timeout: float | None = None) -> Outcome:
        """Wait for and return the engine's outcome (state, value, exception)."""
        if timeout is None:
            self._run_if_queued()
        return self._future.result(timeout)

    def wait(self, timeout: float | None = None) -> State:
        """Wait until the run ends (or ``timeout`` seconds) and return its latest state."""
        try:
            self.outcome(timeout)
        except concurrent.futures.TimeoutError:
            pass
        else:
            self.consumed = True
        state = self.task_run.state
        assert state is not None
        return state

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> T:
        """Wait for the run and return its value; raise its exception unless told not to.

        With ``raise_on_failure=False`` a failed run's exception is returned instead.
        """
        outcome = self.outcome(timeout)
        self.consumed = True
        if outcome.exception is not None:
            if raise_on_failure:
                raise outcome.exception
            return outcome.exception  # type: ignore[return-value]
        return outcome.result  # type: ignore[no-any-return]

    def _concurrent(self) -> concurrent.futures.Future[Outcome]:
        future = self._future
        if isinstance(future, concurrent.futures.Future):
            return future
        bridge: concurrent.futures.Future[Outcome] = concurrent.futures.Future()

        def relay(done: OutcomeFuture) -> None:
            try:
                bridge.set_result(done.result())
            except BaseException as exc:
                bridge.set_exception(exc)

        future.add_done_callback(relay)
        return bridge

    async def await_state(self) -> State:
        """Async twin of :meth:`wait` (no timeout)."""
        await asyncio.wrap_future(self._concurrent())
        self.consumed = True
        state = self.task_run.state
        assert state is not None
        return state

    async def aresult(self, raise_on_failure: bool = True) -> T:
        """Async twin of :meth:`result`."""
        await asyncio.wrap_future(self._concurrent())
        return self.result(raise_on_failure=raise_on_failure)

    def add_done_callback(self, fn: Any) -> None:
        """Call ``fn(self)`` when the run ends."""
        self._future.add_done_callback(lambda _f: fn(self))
