"""Pre-started executors: a pool of ``nbflow execute --standby`` processes.

A standby has imported what a run needs and started a python3 kernel, then waits for
one JSON line on stdin naming its run.  It takes exactly one run and exits, so a kernel
never serves two runs; the pool starts a replacement after each claim.

The pool is careful with the machine:

- memory: no standby starts while the available memory (``MemAvailable`` of
  ``/proc/meminfo``, else psutil when installed) is below ``min_available_mb``; the
  refusal is logged once until memory frees up, and runs start cold meanwhile;
- a standby that dies while idle (killed, out of memory) is swept (its kernel and files)
  and replaced, after a back-off that doubles while standbys keep dying idle;
- a standby started before the runner's environment changed is discarded, not used:
  the environment it would give the run is stale;
- :meth:`StandbyPool.close` closes every idle standby's stdin (it stops its kernel and
  exits), waits for it and kills what is left, so a stopped server leaves no process.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from nbflow.runners.processes import (
    executor_marker,
    remove_kernel_files,
    terminate_run_processes,
)

__all__ = ["Standby", "StandbyPool", "available_memory_mb"]

logger = logging.getLogger("nbflow.runners.standby")

#: Longest wait before replacing a standby when standbys keep dying while idle.
MAX_BACKOFF = 60.0


def available_memory_mb() -> float | None:
    """Return the memory available to new processes in MiB (None: cannot tell)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-untyped]  # (ipykernel requires it)
    except ImportError:
        return None
    return float(psutil.virtual_memory().available) / (1024 * 1024)


@dataclass(eq=False)
class Standby:
    """One pre-started executor waiting for its run."""

    popen: subprocess.Popen[bytes]
    #: ``NAME=value`` in its environment and its kernel's (to find them later).
    marker: str
    #: The environment it was started with, without the marker.
    env: dict[str, str]
    started: float = field(default_factory=time.monotonic)


class StandbyPool:
    """Keep ``size`` standbys ready; hand each out once; replace them; close them all."""

    def __init__(
        self,
        size: int,
        *,
        replenish: bool = True,
        total: int | None = None,
        min_available_mb: float = 0.0,
        pipe_output: bool = False,
        http: bool = False,
    ) -> None:
        """``total`` caps how many are ever started; ``pipe_output`` pipes their output;
        ``http``: their runs report to a server (they prepare the HTTP client ahead)."""
        self.size = size
        self.replenish = replenish
        self.min_available_mb = min_available_mb
        self._budget = total
        self._pipe = pipe_output
        self._argv = ["-m", "nbflow", "execute", "--standby", *(["--http"] if http else [])]
        self._cond = threading.Condition()
        self._idle: deque[Standby] = deque()
        self._starting = 0
        self._closed = False
        self._idle_deaths = 0
        self._low_memory_logged = False
        self._stop = threading.Event()

    # -- filling -----------------------------------------------------------------------
    def fill(self) -> None:
        """Start standbys until ``size`` are ready or starting (memory and budget allowing)."""
        while True:
            with self._cond:
                if self._closed or len(self._idle) + self._starting >= self.size:
                    return
                if self._budget is not None and self._budget <= 0:
                    return
                self._starting += 1
            try:
                if not self._memory_allows():
                    return
                with self._cond:
                    if self._budget is not None:
                        self._budget -= 1
                self._spawn()
            except Exception:
                # Runs start cold meanwhile; the next claim or idle death tries again.
                logger.exception("could not start an executor ahead")
                return
            finally:
                with self._cond:
                    self._starting -= 1
                    self._cond.notify_all()

    def fill_soon(self) -> None:
        """Fill in a background thread (after a claim: the run must not wait for it)."""
        if self.replenish:
            threading.Thread(target=self.fill, name="nbflow-standby-fill", daemon=True).start()

    def _memory_allows(self) -> bool:
        if self.min_available_mb <= 0:
            return True
        available = available_memory_mb()
        if available is None or available >= self.min_available_mb:
            if self._low_memory_logged:
                logger.info("%.0f MiB available again: starting executors ahead", available or 0)
            self._low_memory_logged = False
            return True
        if not self._low_memory_logged:
            logger.warning(
                "not starting an executor ahead: %.0f MiB of memory available, below the "
                "pool's minimum of %.0f MiB; runs start cold until memory frees up",
                available,
                self.min_available_mb,
            )
            self._low_memory_logged = True
        return False

    def _spawn(self) -> None:
        name, value = executor_marker()
        env = dict(os.environ)
        pipe = subprocess.PIPE if self._pipe else None
        popen = subprocess.Popen(
            [sys.executable, *self._argv],
            env={**env, name: value},
            stdin=subprocess.PIPE,
            stdout=pipe,
            stderr=pipe,
            start_new_session=True,
        )
        standby = Standby(popen, f"{name}={value}", env)
        with self._cond:
            closed = self._closed
            if not closed:
                self._idle.append(standby)
        if closed:
            _release(standby)
            return
        threading.Thread(
            target=self._watch_idle, args=(standby,), name="nbflow-standby-watch", daemon=True
        ).start()
        logger.info("started executor %d ahead of its run", popen.pid)

    # -- handing out -------------------------------------------------------------------
    def take(self) -> Standby | None:
        """Return a live standby whose environment is still current (None: none ready)."""
        current = dict(os.environ)
        while True:
            with self._cond:
                if not self._idle:
                    return None
                standby = self._idle.popleft()
            if standby.popen.poll() is not None:
                continue  # died idle: its watcher sweeps and replaces it
            if standby.env != current:
                logger.info(
                    "executor %d was started before the environment changed: released",
                    standby.popen.pid,
                )
                _release(standby)
                self.fill_soon()
                continue
            with self._cond:
                self._idle_deaths = 0
            return standby

    @property
    def idle(self) -> list[int]:
        """The pids of the standbys ready now."""
        with self._cond:
            return [s.popen.pid for s in self._idle]

    # -- deaths and closing ------------------------------------------------------------
    def _watch_idle(self, standby: Standby) -> None:
        code = standby.popen.wait()
        with self._cond:
            if standby not in self._idle:
                return  # claimed (its run's watcher owns it) or released
            self._idle.remove(standby)
            closed = self._closed
            self._idle_deaths += 1
            delay = min(MAX_BACKOFF, 2.0 ** (self._idle_deaths - 1) - 1)
        _sweep(standby)
        if closed or not self.replenish:
            return
        logger.warning(
            "executor %d exited with code %s while waiting for a run; replacing it%s",
            standby.popen.pid,
            code,
            f" in {delay:g} s" if delay else "",
        )
        if not self._stop.wait(delay):
            self.fill()

    def close(self, timeout: float = 30.0) -> None:
        """Stop every idle standby (stdin closed: it stops its kernel and exits)."""
        with self._cond:
            self._closed = True
            self._stop.set()
            while self._starting:
                self._cond.wait()
            idle, self._idle = list(self._idle), deque()
        for standby in idle:
            _release(standby)
        deadline = time.monotonic() + timeout
        for standby in idle:
            try:
                standby.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("executor %d did not exit: killed", standby.popen.pid)
                try:
                    os.killpg(standby.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                standby.popen.wait()
            _sweep(standby)


def _release(standby: Standby) -> None:
    """Close the standby's stdin: it stops its kernel and exits without running anything."""
    try:
        assert standby.popen.stdin is not None
        standby.popen.stdin.close()
    except OSError:
        pass


def _sweep(standby: Standby) -> None:
    """Stop what an exited standby left (its kernel) and remove its kernel files."""
    try:
        terminate_run_processes([standby.popen.pid], standby.marker, 2.0)
        try:
            from jupyter_core.paths import jupyter_runtime_dir
        except ImportError:
            return
        remove_kernel_files(standby.popen.pid, Path(jupyter_runtime_dir()))
    except Exception:
        logger.exception("could not clean up after executor %d", standby.popen.pid)
