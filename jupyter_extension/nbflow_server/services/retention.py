"""The retention service: prune finished runs older than ``NbflowApp.retention_days``.

Off by default (``retention_days = 0``: keep every run forever).  When on, every
``retention_interval`` seconds (and once at start-up) it deletes the terminal runs that
ended more than ``retention_days`` ago, with their task runs, states, logs, artifacts,
result files and the output notebooks nbflow wrote (:mod:`nbflow.engine.retention`,
what ``nbflow runs prune`` does).  Each batch of ``retention_batch_size`` runs is one
write transaction in a worker thread, with a short pause between batches, so the API
and the runs reporting to it interleave with a long prune instead of waiting for it.

The settings are a mixin of :class:`~nbflow_server.app.NbflowApp`
(``c.NbflowApp.retention_days = 30``; see docs/server.md).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from traitlets import Float, Integer, TraitError, validate
from traitlets.config import Configurable

from nbflow.engine.results import ResultStore
from nbflow.engine.retention import DEFAULT_BATCH_SIZE, PruneSummary, prune_batch
from nbflow.orchestration.store import Store
from nbflow.states import now
from nbflow_server.services.base import PeriodicService, Service

__all__ = ["RetentionService", "RetentionSettings", "retention_services"]

logger = logging.getLogger("nbflow.server.retention")


class RetentionSettings(Configurable):
    """How long finished runs are kept, and how the server prunes the older ones."""

    retention_days = Float(
        0.0,
        help=(
            "Delete terminal flow runs (Completed, Failed, Cancelled, Crashed) that ended "
            "more than this many days ago, with their task runs, logs, artifacts, results "
            "and output notebooks (0: keep every run forever). Scheduled and in-progress "
            "runs are never deleted."
        ),
    ).tag(config=True)

    retention_interval = Float(
        3600.0, help="Seconds between two passes of the retention service (when it is on)."
    ).tag(config=True)

    retention_batch_size = Integer(
        DEFAULT_BATCH_SIZE,
        help="Runs the retention service deletes per transaction (smaller: shorter waits).",
    ).tag(config=True)

    @validate("retention_days", "retention_interval", "retention_batch_size")
    def _in_range(self, proposal: dict[str, Any]) -> Any:
        value, name = proposal["value"], proposal["trait"].name
        ok, need = {
            "retention_days": (value >= 0, "at least 0 (0: keep every run forever)"),
            "retention_interval": (value > 0, "positive seconds, e.g. 3600"),
            "retention_batch_size": (value >= 1, "at least 1 run per transaction, e.g. 500"),
        }[name]
        if not ok:
            raise TraitError(f"NbflowApp.{name}={value!r}: must be {need}")
        return value


class RetentionService(PeriodicService):
    """Prune, batch by batch in a worker thread, every ``interval`` seconds."""

    name = "retention"

    def __init__(
        self,
        store: Store,
        *,
        older_than: timedelta,
        interval: float,
        batch_size: int = DEFAULT_BATCH_SIZE,
        pause: float = 0.05,
        results: ResultStore | None = None,
        home: Path | None = None,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        super().__init__(interval)
        #: The server's log (what it deleted is worth an operator's eye), else this module's.
        self.log = log or logger
        self.store = store
        self.older_than = older_than
        self.batch_size = batch_size
        self.pause = pause
        self.results = results
        self.home = home
        #: The figures of the last pass (None before the first).
        self.last: PruneSummary | None = None

    async def tick(self) -> None:
        """Prune every run old enough now, one batch per transaction."""
        loop = asyncio.get_running_loop()
        at = now()
        total = PruneSummary(at - self.older_than)
        while True:
            batch = await loop.run_in_executor(
                None,
                functools.partial(
                    prune_batch,
                    self.store,
                    older_than=self.older_than,
                    batch_size=self.batch_size,
                    results=self.results,
                    home=self.home,
                    at=at,
                ),
            )
            total.add(batch)
            if not batch.more:
                break
            await asyncio.sleep(self.pause)  # let the API's writers in between batches
        self.last = total
        if total.counts.runs:
            self.log.info("nbflow retention: %s", total.describe())


def retention_services(app: Any) -> list[Service]:
    """Return the retention service ``app``'s settings ask for (none when it is off)."""
    if not app.retention_days:
        return []
    return [
        RetentionService(
            app.lifecycle.store,
            older_than=timedelta(days=app.retention_days),
            interval=app.retention_interval,
            batch_size=app.retention_batch_size,
            log=app.log,
        )
    ]
