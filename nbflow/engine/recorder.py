"""The recorder: ships task-run snapshots, task-run states and logs to the store in batches.

One daemon thread per client drains a queue, coalesces task-run snapshots by id (the latest
wins), keeps every state in order and writes through :meth:`Client.write_task_runs` and
:meth:`Client.write_logs`.  Producers only append to a queue, so recording a transition
costs well under a microsecond on the engine's hot path; :meth:`Recorder.flush` waits until
everything enqueued before it is written.

While the server is unreachable the writer waits inside the HTTP client, which retries
each write for ``NBFLOW_API_RETRY_SECONDS`` (the writes are idempotent: upserts by id,
states by transition id); meanwhile the queue keeps what the engine records, in order,
and the cells go on.  A batch the client gave up on is logged and dropped (the server was
unreachable for the whole window).
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from typing import Protocol
from uuid import UUID

from nbflow.client.base import Client
from nbflow.schemas import Log, TaskRun
from nbflow.states import State

__all__ = ["CollectingSink", "Recorder", "RunSink", "get_recorder"]

log = logging.getLogger("nbflow.engine.recorder")

#: How long the writer lingers after the first item so a batch can form.
LINGER_SECONDS = 0.02
MAX_BATCH = 5000


class RunSink(Protocol):
    """Where a task engine sends what happens: transitions and log records."""

    def transition(self, task_run: TaskRun, state: State) -> None:
        """Record that ``task_run`` entered ``state`` (``task_run.state`` is already set)."""

    def log(self, record: Log) -> None:
        """Record one log line."""


class CollectingSink:
    """A sink that keeps everything in lists (a task run on a Dask worker returns them)."""

    def __init__(self) -> None:
        self.states: list[State] = []
        self.logs: list[Log] = []

    def transition(self, task_run: TaskRun, state: State) -> None:
        """Keep ``state``."""
        self.states.append(state)

    def log(self, record: Log) -> None:
        """Keep ``record``."""
        self.logs.append(record)


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class Recorder:
    """Batch writer of task runs, task-run states and logs for one client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="nbflow-recorder", daemon=True)
        self._thread.start()

    # -- producer side (hot path) --------------------------------------------------------
    def transition(self, task_run: TaskRun, state: State) -> None:
        """Enqueue a snapshot of ``task_run`` and its new ``state``."""
        self._queue.put((task_run, state))

    def log(self, record: Log) -> None:
        """Enqueue a log record."""
        self._queue.put(record)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything enqueued so far is written; return False on timeout."""
        marker = _Flush()
        self._queue.put(marker)
        return marker.done.wait(timeout)

    # -- writer thread -------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            items = [self._queue.get()]
            time.sleep(LINGER_SECONDS)
            try:
                while len(items) < MAX_BATCH:
                    items.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            # The cyclic garbage collector is paused while a batch is written: a full
            # collection walks every live object of the process (the engine's backlog of
            # task runs and states included), which cost a third of a 10,000-task flow's CPU.
            # Paused only if it was running, and only for the write (tens of ms): cycles
            # made meanwhile are collected once it resumes.
            paused = gc.isenabled()
            if paused:
                gc.disable()
            try:
                self._write(items)
            finally:
                if paused:
                    gc.enable()

    def _write(self, items: list[object]) -> None:
        runs: dict[UUID, TaskRun] = {}
        states: list[tuple[UUID, State]] = []
        logs: list[Log] = []
        markers: list[_Flush] = []
        for item in items:
            if type(item) is tuple:
                task_run, state = item
                runs[task_run.id] = task_run
                states.append((task_run.id, state))
            elif isinstance(item, Log):
                logs.append(item)
            elif isinstance(item, _Flush):
                markers.append(item)
        try:
            if runs:
                # Snapshots: the engine keeps mutating its live TaskRun objects.
                self.client.write_task_runs([_snapshot(r) for r in runs.values()], states)
            if logs:
                self.client.write_logs(logs)
        except Exception:
            log.exception(
                "nbflow recorder could not write %d task runs and %d logs; they are lost",
                len(runs),
                len(logs),
            )
        for marker in markers:
            marker.done.set()


_new = object.__new__
_setattr = object.__setattr__


def _snapshot(run: TaskRun) -> TaskRun:
    """Return a shallow copy of ``run`` (a tenth of ``model_copy()``'s cost).

    The dict copy is one C call, so it never sees a half-done update; the engine replaces
    field values (never mutates the lists) while a run is live.
    """
    copy = _new(TaskRun)
    _setattr(copy, "__dict__", run.__dict__.copy())
    _setattr(copy, "__pydantic_fields_set__", set(run.__pydantic_fields_set__))
    _setattr(copy, "__pydantic_extra__", None)
    _setattr(copy, "__pydantic_private__", None)
    return copy


_lock = threading.Lock()
_recorders: dict[int, Recorder] = {}


def get_recorder(client: Client) -> Recorder:
    """Return the recorder of ``client`` (one writer thread per client)."""
    recorder = _recorders.get(id(client))
    if recorder is not None and recorder.client is client:
        return recorder
    with _lock:
        recorder = _recorders.get(id(client))
        if recorder is None or recorder.client is not client:
            recorder = _recorders[id(client)] = Recorder(client)
    return recorder
