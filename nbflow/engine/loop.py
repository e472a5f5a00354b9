"""The single background event-loop thread that runs nbflow's async work from sync code.

nbflow never calls ``asyncio.run`` or patches a running loop (a Jupyter kernel already has
one).  Async task runs submitted from a sync flow and other coroutines that sync code must
wait for run on one daemon thread that owns its own loop, started on first use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from nbflow.exceptions import NbflowError

__all__ = ["get_loop", "in_loop_thread", "run_coroutine", "submit_coroutine"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()


def get_loop() -> asyncio.AbstractEventLoop:
    """Return nbflow's background loop, starting its thread on first use."""
    global _loop, _thread
    if _loop is not None and _thread is not None and _thread.is_alive():
        return _loop
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=_serve, args=(loop, ready), name="nbflow-loop", daemon=True
            )
            thread.start()
            ready.wait()
            _loop, _thread = loop, thread
    return _loop


def in_loop_thread() -> bool:
    """Whether the caller runs on nbflow's background loop thread."""
    return _thread is not None and threading.current_thread() is _thread


def submit_coroutine(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the background loop; return a thread-safe future of its result."""
    return asyncio.run_coroutine_threadsafe(coro, get_loop())


def run_coroutine(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the background loop and block until it finishes (sync twin of ``await``)."""
    if in_loop_thread():
        coro.close()
        raise NbflowError(
            "run_coroutine() called from nbflow's loop thread would deadlock; await the coroutine"
        )
    return submit_coroutine(coro).result(timeout)
