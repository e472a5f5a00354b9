"""Ship a run's infrastructure output (container or pod logs) into its logs, in batches."""

from __future__ import annotations

import logging
import threading
from uuid import UUID

from nbflow.client.base import Client
from nbflow.schemas import Log

__all__ = ["LogShipper"]

logger = logging.getLogger("nbflow.runners")

#: Seconds between two shipments.
FLUSH_SECONDS = 1.0


class LogShipper:
    """Buffer output lines and send them as log records once a second (and on close)."""

    def __init__(self, client: Client | None, flow_run_id: UUID, name: str) -> None:
        """Ship to ``client`` (None: drop the lines) under the logger name ``name``."""
        self.client, self.flow_run_id, self.name = client, flow_run_id, name
        self._lock = threading.Lock()
        self._buffer: list[Log] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nbflow-logship", daemon=True)

    def start(self) -> None:
        """Start the shipping thread."""
        self._thread.start()

    def add(self, line: str, level: int = logging.INFO) -> None:
        """Queue one output line."""
        if self.client is None or not line.strip():
            return
        entry = Log(flow_run_id=self.flow_run_id, level=level, logger=self.name, message=line)
        with self._lock:
            self._buffer.append(entry)

    def flush(self) -> None:
        """Send what is queued."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch and self.client is not None:
            try:
                self.client.write_logs(batch)
            except Exception:
                logger.warning("flow run %s: could not ship logs", self.flow_run_id, exc_info=True)

    def _loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self.flush()

    def close(self) -> None:
        """Stop the thread and send the rest."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush()
