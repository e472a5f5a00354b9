"""Task runners: where submitted task runs execute.

A runner gets a :class:`~nbflow.engine.task_engine.TaskCall` whose upstream futures are
all done (the base class chains dependencies without blocking a worker) and returns a
``concurrent.futures.Future``-like (:class:`~nbflow.engine.futures.OutcomeFuture`) of its :class:`~nbflow.engine.task_engine.Outcome`.
Built-ins register under the ``nbflow.task_runners`` entry-point group like third parties:
``thread`` (the default) and ``dask``.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import os
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from nbflow.engine import loop
from nbflow.engine.futures import OutcomeFuture
from nbflow.engine.task_engine import Outcome, TaskCall
from nbflow.exceptions import NbflowError

__all__ = ["TaskRunner", "ThreadPoolTaskRunner", "load_task_runner", "resolve_task_runner"]


class TaskRunner(ABC):
    """Execute task calls somewhere and hand back futures of their outcomes."""

    #: The entry-point name (``thread``, ``dask``).
    name: str = ""

    def start(self) -> None:
        """Acquire resources (threads, a cluster connection); called when a flow run starts."""

    def shutdown(self) -> None:
        """Release what :meth:`start` acquired; called when the flow run ends."""

    def __enter__(self) -> TaskRunner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def duplicate(self) -> TaskRunner:
        """Return an unstarted runner with the same configuration (for a nested flow run)."""
        return type(self)()

    def submit(self, call: TaskCall) -> OutcomeFuture:
        """Run ``call`` once its upstream futures are done; return a future of its outcome."""
        pending = [f for f in call.upstream.values() if not f.done()]
        if not pending:
            return self._submit(call)
        outer: concurrent.futures.Future[Outcome] = concurrent.futures.Future()
        remaining = [len(pending)]
        lock = threading.Lock()

        def relay(inner: OutcomeFuture) -> None:
            try:
                outer.set_result(inner.result())
            except BaseException as exc:
                outer.set_exception(exc)

        def one_done(_fut: Any) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            try:
                self._submit(call).add_done_callback(relay)
            except BaseException as exc:
                outer.set_exception(exc)

        for fut in pending:
            fut.add_done_callback(one_done)
        return outer

    @abstractmethod
    def _submit(self, call: TaskCall) -> OutcomeFuture:
        """Start ``call`` (its upstream is done) and return a future of its outcome."""


class ThreadPoolTaskRunner(TaskRunner):
    """Run sync tasks on a pool of threads and async tasks on nbflow's background loop.

    The pool is a plain queue and up to ``max_workers`` threads started on demand: lighter
    per submission than ``concurrent.futures.ThreadPoolExecutor``.
    """

    name = "thread"

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._queue: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closing = False
        self._lock = threading.Lock()

    def duplicate(self) -> ThreadPoolTaskRunner:
        """Return an unstarted runner with the same pool size."""
        return ThreadPoolTaskRunner(self.max_workers)

    def start(self) -> None:
        """Accept submissions (threads start on demand)."""
        with self._lock:
            self._closing = False

    def shutdown(self) -> None:
        """Let queued task runs finish, then stop the threads."""
        with self._lock:
            self._closing = True
            threads, self._threads = self._threads, []
            self._idle = 0
            for _ in threads:
                self._queue.put(None)
        for thread in threads:
            thread.join()

    def _work(self) -> None:
        # A thread starts reserved for the item that made it; afterwards it counts as idle
        # until a submission reserves it again.
        while True:
            item = self._queue.get()
            if item is None:
                return
            item.run()
            with self._lock:
                self._idle += 1

    def _submit(self, call: TaskCall) -> OutcomeFuture:
        if call.is_async:
            return loop.submit_coroutine(call.run_async())
        item = _WorkItem(call)
        thread = None
        with self._lock:
            closing = self._closing
            # Reserve an idle thread for this item, or start one (up to max_workers).
            if closing:
                pass
            elif self._idle > 0:
                self._idle -= 1
            elif len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"nbflow-task-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
        if closing:
            # Shutting down (a dependent run released by its upstream's callback): the
            # workers are being stopped, so run it in the calling thread.
            item.run()
            return item
        self._queue.put(item)
        if thread is not None:
            thread.start()
        return item


_callbacks_lock = threading.Lock()


class _WorkItem:
    """A queued sync task run that a pool thread or a waiting caller runs, whoever is first.

    It is its own (light) future: ``result()`` on a run no thread has picked up yet runs it
    in the waiting thread (work stealing), which saves a thread hand-off for
    ``task.submit(x).result()``; a bare lock serves as the done latch.
    """

    __slots__ = (
        "_callbacks",
        "_claim",
        "_done",
        "_exception",
        "_latch",
        "_outcome",
        "call",
        "context",
    )

    def __init__(self, call: TaskCall) -> None:
        self.call: TaskCall | None = call
        self.context: contextvars.Context | None = contextvars.copy_context()
        self._claim = threading.Lock()
        self._latch = threading.Lock()
        self._latch.acquire()
        self._done = False
        self._outcome: Outcome | None = None
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[Any], object]] | None = None

    def run(self) -> None:
        """Run the task run unless another thread already did."""
        if not self._claim.acquire(blocking=False):
            return
        call, context = self.call, self.context
        self.call = self.context = None
        assert call is not None and context is not None
        try:
            outcome = context.run(call.run_sync)
        except BaseException as exc:
            self._finish(None, exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self._finish(outcome, None)

    steal = run

    def _finish(self, outcome: Outcome | None, exception: BaseException | None) -> None:
        self._outcome, self._exception = outcome, exception
        with _callbacks_lock:
            self._done = True
            callbacks, self._callbacks = self._callbacks, None
        self._latch.release()
        for fn in callbacks or ():
            fn(self)

    def done(self) -> bool:
        """Whether the run finished."""
        return self._done

    def result(self, timeout: float | None = None) -> Outcome:
        """Wait for the outcome."""
        if not self._done:
            if not self._latch.acquire(True, -1 if timeout is None else timeout):
                raise concurrent.futures.TimeoutError()
            self._latch.release()
        if self._exception is not None:
            raise self._exception
        assert self._outcome is not None
        return self._outcome

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        """Call ``fn(self)`` when done (now if already done)."""
        with _callbacks_lock:
            if not self._done:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)


def load_task_runner(name: str) -> type[TaskRunner]:
    """Return the task runner class registered under ``name`` (entry point)."""
    found = {ep.name: ep for ep in entry_points(group="nbflow.task_runners")}
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise NbflowError(f"unknown task runner {name!r}; installed task runners: {known}")
    cls = found[name].load()
    if not (isinstance(cls, type) and issubclass(cls, TaskRunner)):
        raise NbflowError(f"task runner entry point {name!r} is not a TaskRunner subclass")
    return cls


def resolve_task_runner(spec: TaskRunner | type[TaskRunner] | str | None) -> TaskRunner:
    """Turn an instance, a class, an entry-point name or None (thread pool) into a runner."""
    if spec is None:
        return ThreadPoolTaskRunner()
    if isinstance(spec, str):
        return load_task_runner(spec)()
    if isinstance(spec, type):
        return spec()
    return spec
