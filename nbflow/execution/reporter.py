"""Cell output as logs, and heartbeats, shipped from an OS thread of ``nbflow execute``.

The same thread looks at the run's state every few seconds: a run that turned Cancelling
stops itself (:attr:`Reporter.on_cancelling`) even when no dispatcher, worker or caller is
left to stop it.  A failed heartbeat or log shipment never stops the run: through a server that is down
the HTTP client retries (``NBFLOW_API_RETRY_SECONDS``) while the buffer keeps the output
in order; what the client finally gives up on is logged here and dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from nbflow.client import Client
from nbflow.schemas import Log
from nbflow.states import StateType

__all__ = ["HEARTBEAT_SECONDS", "LOG_FLUSH_SECONDS", "Reporter"]

logger = logging.getLogger("nbflow.execution.executor")

#: Seconds between heartbeats of a running flow run (the monitors' crash detection).
HEARTBEAT_SECONDS = 10.0
#: Seconds between shipments of buffered cell output.
LOG_FLUSH_SECONDS = 1.0
#: Seconds between looks at the run's own state (a cancel nobody else acts on).
CANCEL_CHECK_SECONDS = 2.0


class Reporter:
    """Buffer cell output as logs and ship them (with heartbeats) from an OS thread."""

    def __init__(self, client: Client, run_id: UUID) -> None:
        self.client, self.run_id = client, run_id
        self._lock = threading.Lock()
        self._buffer: list[Log] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nbflow-execute", daemon=True)
        self.cells_done = 0
        #: Set by SIGTERM: no further cell starts.
        self.terminated = threading.Event()
        #: Called (on this thread) once the run turns Cancelling: the executor stops
        #: itself, so a run whose owner died (a pipeline's killed caller, a worker that is
        #: down) still ends Cancelled instead of running on.
        self.on_cancelling: Callable[[], None] | None = None
        #: Interrupts the kernel again every second once the run is told to stop: a stop
        #: that lands while a cell is being sent finds the kernel idle, and the cell would
        #: then run to its end (a 600 s sleep held SIGTERM until the SIGKILL).
        self.interrupt: Callable[[], None] | None = None

    def start(self) -> None:
        """Start the shipping thread."""
        self._thread.start()

    def _loop(self) -> None:
        last_beat = last_look = 0.0
        while not self._stop.wait(LOG_FLUSH_SECONDS):
            self.flush()
            if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                last_beat = time.monotonic()
                try:
                    self.client.heartbeat(self.run_id)
                except Exception:
                    logger.warning("flow run %s: heartbeat failed", self.run_id, exc_info=True)
            if self.terminated.is_set() and self.interrupt is not None:
                self.interrupt()
            if (
                self.on_cancelling is not None
                and time.monotonic() - last_look >= CANCEL_CHECK_SECONDS
            ):
                last_look = time.monotonic()
                self._look_for_cancel()

    def _look_for_cancel(self) -> None:
        """Stop the run (once) when it turned Cancelling; a failed look waits for the next."""
        try:
            state = self.client.read_flow_run(self.run_id).state
        except Exception:
            return
        if state is None or state.type is not StateType.CANCELLING:
            return
        callback, self.on_cancelling = self.on_cancelling, None
        logger.info("flow run %s is Cancelling: stopping its kernel", self.run_id)
        if callback is not None:
            callback()

    def log(self, message: str, level: int = logging.INFO) -> None:
        """Buffer one log line of the run."""
        entry = Log(flow_run_id=self.run_id, level=level, logger="nbflow.notebook", message=message)
        with self._lock:
            self._buffer.append(entry)

    def cell_complete(self, index: int, cell: Any) -> None:
        """Count a finished cell and buffer its stream and error outputs as logs."""
        self.cells_done += 1
        source = cell.get("source", "")
        if "".join(source).lstrip().startswith("%%task"):
            return  # the kernel logs a task cell's output under its task run
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "stream":
                level = logging.WARNING if output.get("name") == "stderr" else logging.INFO
                text = "".join(output.get("text", ""))
                self.log(f"[cell {index}] {text.rstrip()}", level)
            elif kind == "error":
                self.log(
                    f"[cell {index}] {output.get('ename')}: {output.get('evalue')}", logging.ERROR
                )

    def flush(self) -> None:
        """Ship the buffered logs (waiting for the server while it is unreachable)."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            try:
                self.client.write_logs(batch)
            except Exception:
                logger.warning("flow run %s: could not ship logs", self.run_id, exc_info=True)

    def close(self) -> None:
        """Stop the thread and ship what is left."""
        self._stop.set()
        self._thread.join()
        self.flush()
