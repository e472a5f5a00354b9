"""Interrupt a synchronous call that runs too long.

* In the main thread: ``SIGALRM`` (``setitimer``), so even ``time.sleep`` is interrupted.
* In any other thread: an asynchronous exception raised in that thread
  (``PyThreadState_SetAsyncExc``), delivered at the next bytecode boundary, so a long
  C call (one ``time.sleep(60)``) finishes before the exception lands.

Async code uses ``asyncio.timeout`` instead (see the task engine).
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["TimeoutSignal", "sync_timeout"]


class TimeoutSignal(BaseException):
    """Raised inside the timed-out call; a BaseException so user ``except Exception`` misses it."""


def _main_thread_timeout(seconds: float, signal_type: type[TimeoutSignal]) -> Iterator[None]:
    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise signal_type()

    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer_delay, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_delay > 0:
            # Re-arm an enclosing timeout (a flow's, around this task's).
            remaining = outer_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.001))


def _thread_timeout(seconds: float, signal_type: type[TimeoutSignal]) -> Iterator[None]:
    thread_id = threading.get_ident()
    lock = threading.Lock()
    state = {"active": True, "fired": False}

    def fire() -> None:
        with lock:
            if state["active"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(thread_id), ctypes.py_object(signal_type)
                )

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            state["active"] = False
            timer.cancel()
            if state["fired"]:
                # The exception may still be pending if the call returned just before it
                # landed: clear it so it cannot hit unrelated code later.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)


@contextmanager
def sync_timeout(seconds: float | None, on_timeout: Callable[[], BaseException]) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (None: never) and raise ``on_timeout()`` instead.

    Each use raises its own subclass of :class:`TimeoutSignal`, so nested timeouts (a task's
    inside a flow's) never take each other's signal.
    """
    if seconds is None:
        yield
        return
    signal_type: type[TimeoutSignal] = type("TimeoutSignal", (TimeoutSignal,), {})
    use_alarm = threading.current_thread() is threading.main_thread()
    guard = _main_thread_timeout if use_alarm else _thread_timeout
    try:
        yield from guard(seconds, signal_type)
    except signal_type:
        raise on_timeout() from None
