"""Pruning old finished flow runs: the store's batches, then the files those runs owned.

The store chooses and deletes the runs (:mod:`nbflow.orchestration.store.retention`); this
module drives it batch by batch and, after each batch has committed, deletes the files
the batch's runs owned: their persisted task results (through :class:`ResultStore`, the
owner of result files) and their output notebooks.  An output notebook is deleted only
where ``nbflow execute`` wrote it itself — ``$NBFLOW_HOME/outputs/<flow>/<run id>.ipynb``
of the process pruning — never a path a user chose, never anything outside that folder.

The CLI (``nbflow runs prune``) and the server (its retention service and
``POST /flow_runs/prune``) both prune through :func:`prune_batch`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID

from nbflow.engine.results import ResultStore, get_result_store
from nbflow.exceptions import NbflowError
from nbflow.orchestration.store import Store
from nbflow.orchestration.store import retention as tx
from nbflow.orchestration.store.retention import PruneCounts
from nbflow.settings import get_settings
from nbflow.states import now

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "PruneSummary",
    "is_own_output",
    "prune_batch",
    "prune_flow_runs",
]

logger = logging.getLogger("nbflow.retention")

#: Runs deleted per write transaction: small enough that writers wait well under a second.
DEFAULT_BATCH_SIZE = 500


@dataclass
class PruneSummary:
    """What a prune deleted (on a dry run: what it would delete) and when it stopped."""

    cutoff: datetime
    dry_run: bool = False
    counts: PruneCounts = field(default_factory=PruneCounts)
    #: Result files and output notebooks deleted.
    files: int = 0
    batches: int = 0
    #: Whether prunable runs are left (a single batch was asked for, or a limit hit).
    more: bool = False

    def add(self, other: PruneSummary) -> None:
        """Add another batch's figures to these."""
        self.counts.add(other.counts)
        self.files += other.files
        self.batches += other.batches
        self.more = other.more

    def describe(self) -> str:
        """Return the one-line summary the CLI and the server's log print."""
        c = self.counts
        verb = "would delete" if self.dry_run else "deleted"
        text = (
            f"{verb} {c.runs} flow run{'s' * (c.runs != 1)}, {c.task_runs} task run"
            f"{'s' * (c.task_runs != 1)}, {c.states} states, {c.logs} log record"
            f"{'s' * (c.logs != 1)}, {c.artifacts} artifact{'s' * (c.artifacts != 1)}"
        )
        if not self.dry_run:
            text += f" and {self.files} file{'s' * (self.files != 1)}"
        return text + f" (finished before {self.cutoff.isoformat(timespec='seconds')})"


def is_own_output(location: str, run_id: UUID, home: Path) -> bool:
    """Whether ``location`` is the output notebook ``nbflow execute`` wrote for ``run_id``.

    That is ``<home>/outputs/<one folder>/<run id>.ipynb`` exactly (after resolving ``..``
    and links): a notebook a user chose as the output, or anything elsewhere, is not.
    """
    path_text = location.removeprefix("file://")
    if "://" in path_text or "\x00" in path_text:
        return False
    outputs = (home / "outputs").resolve()
    path = Path(path_text).resolve()
    return path.name == f"{run_id}.ipynb" and path.parent.parent == outputs


def prune_batch(
    store: Store,
    *,
    older_than: timedelta,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    results: ResultStore | None = None,
    home: Path | None = None,
    at: datetime | None = None,
) -> PruneSummary:
    """Delete one batch of runs that finished more than ``older_than`` ago, then their files.

    A dry run deletes nothing and counts everything a whole prune would delete.
    ``results`` and ``home`` default to this process's settings (``NBFLOW_RESULTS_URL``,
    ``NBFLOW_HOME``): where the runs it executed wrote their files.
    """
    if older_than <= timedelta(0):
        raise NbflowError(f"older_than={older_than}: must be positive (e.g. 30 days)")
    if batch_size < 1:
        raise NbflowError(f"batch_size={batch_size}: must be at least 1 (e.g. 500)")
    cutoff = (at or now()) - older_than
    if dry_run:
        counts = store.read_transaction(lambda c: tx.count_prunable(c, cutoff))
        return PruneSummary(cutoff, dry_run=True, counts=counts)
    candidates = store.read_transaction(lambda c: tx.select_prunable(c, cutoff, batch_size))
    batch = store.write_transaction(lambda c: tx.delete_runs(c, candidates, cutoff))
    summary = PruneSummary(cutoff, counts=batch.counts, batches=1 if batch.run_ids else 0)
    summary.more = len(candidates) == batch_size
    summary.files = _delete_files(batch, results or get_result_store(), home)
    return summary


def prune_flow_runs(
    store: Store,
    *,
    older_than: timedelta,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    results: ResultStore | None = None,
    home: Path | None = None,
    on_batch: Callable[[PruneSummary], None] | None = None,
    pause: float = 0.0,
) -> PruneSummary:
    """Prune batch after batch until no run older than ``older_than`` is left.

    ``on_batch`` sees the running totals after each batch (progress); ``pause`` seconds
    between batches leave the database to other writers.
    """
    at = now()
    total = PruneSummary(at - older_than, dry_run=dry_run)
    while True:
        batch = prune_batch(
            store,
            older_than=older_than,
            batch_size=batch_size,
            dry_run=dry_run,
            results=results,
            home=home,
            at=at,
        )
        total.add(batch)
        if on_batch is not None and (batch.batches or dry_run):
            on_batch(total)
        if dry_run or not batch.more:
            total.more = False
            return total
        if pause:
            time.sleep(pause)


def _delete_files(batch: tx.PrunedBatch, results: ResultStore, home: Path | None) -> int:
    """Delete the batch's result files and own output notebooks; return how many went."""
    deleted = 0
    for key in batch.result_keys:
        try:
            deleted += results.delete(key)
        except (OSError, NbflowError) as exc:
            logger.warning("retention: could not delete result %s: %s", key, exc)
    home = home or get_settings().home
    seen: set[str] = set()
    for run_id, location in batch.outputs:
        if location in seen or not is_own_output(location, run_id, home):
            continue
        seen.add(location)
        path = Path(location.removeprefix("file://"))
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("retention: could not delete %s: %s", path, exc)
            continue
        deleted += 1
    return deleted
