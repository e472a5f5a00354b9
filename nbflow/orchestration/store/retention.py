"""Retention: which finished flow runs are old enough to delete, and deleting a batch of them.

A run is *prunable* when its state is terminal (Completed, Failed, Cancelled, Crashed) and
its end (its creation when it never started) is before the cutoff, and no child run of it
(``parent_flow_run_id``) is still open.  Scheduled, Pending, Running, Paused and
Cancelling runs are never pruned, whatever their age.

Pruning goes batch by batch so writers are never held up long: the candidates are chosen
in a read transaction (:func:`select_prunable`, which takes no write lock), then one write
transaction per batch (:func:`delete_runs`) re-checks them and deletes the runs with every
row that belongs to them — task runs and their states, the run's states, logs,
artifacts, notification deliveries — children first, so the counts are exact.

Files are not this module's business (the store does no I/O beyond its database): a batch
returns the result keys and output-notebook locations its runs *own*, for the caller to
delete after the commit (:mod:`nbflow.engine.retention`).  A result key is owned only when
no run that stays may still read it:

* a key some kept task run also has as its cache key (a cache hit, or a later write) stays;
* a cache entry that has not expired stays (a future run may hit it), whoever wrote it;
* a key named by a kept run that retries or repairs a pruned one (its repair plan in its
  first state, its restored task runs' states) stays: that run reads the outputs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from nbflow.orchestration.store.tables import (
    UTCDateTime,
    artifacts,
    flow_run_states,
    flow_runs,
    logs,
    notification_deliveries,
    task_run_states,
    task_runs,
)
from nbflow.states import TERMINAL_TYPES, StateType, now

__all__ = [
    "OUTPUT_ARTIFACT_KEY",
    "PruneCounts",
    "PrunedBatch",
    "count_prunable",
    "delete_runs",
    "prunable",
    "select_prunable",
]

#: The artifact key under which ``nbflow execute`` records a run's output notebook.
OUTPUT_ARTIFACT_KEY = "output-notebook"

_TERMINAL = sorted(t.value for t in TERMINAL_TYPES)


@dataclass
class PruneCounts:
    """How many rows a prune deleted (or, on a dry run, would delete)."""

    runs: int = 0
    task_runs: int = 0
    logs: int = 0
    #: Flow-run and task-run states.
    states: int = 0
    artifacts: int = 0

    def add(self, other: PruneCounts) -> None:
        """Add ``other``'s counts to these."""
        self.runs += other.runs
        self.task_runs += other.task_runs
        self.logs += other.logs
        self.states += other.states
        self.artifacts += other.artifacts


@dataclass
class PrunedBatch:
    """One committed batch: its counts and the files its runs owned, for the caller."""

    counts: PruneCounts = field(default_factory=PruneCounts)
    run_ids: list[UUID] = field(default_factory=list)
    #: Result-storage keys no kept run may read (see the module docstring).
    result_keys: list[str] = field(default_factory=list)
    #: ``(run id, location)`` of each output notebook recorded for a deleted run (its
    #: ``output_path`` and its output artifact's ``uri``); the caller deletes only the
    #: ones nbflow wrote.
    outputs: list[tuple[UUID, str]] = field(default_factory=list)


def prunable(cutoff: datetime) -> sa.ColumnElement[bool]:
    """Return the condition on ``flow_runs`` of a run that may be pruned at ``cutoff``."""
    fr = flow_runs.c
    child = flow_runs.alias("child")
    ended = sa.func.coalesce(fr.end_time, fr.created, type_=UTCDateTime())
    # The parents of open runs, found once (not a lookup per run: with statistics of a
    # mostly-NULL column SQLite would scan every run for each candidate).
    open_parents = sa.select(child.c.parent_flow_run_id).where(
        child.c.parent_flow_run_id.is_not(None),
        sa.or_(child.c.state_type.is_(None), child.c.state_type.not_in(_TERMINAL)),
    )
    return sa.and_(fr.state_type.in_(_TERMINAL), ended < cutoff, fr.id.not_in(open_parents))


def select_prunable(conn: sa.Connection, cutoff: datetime, limit: int) -> list[UUID]:
    """Return up to ``limit`` prunable runs, oldest first (run it in a read transaction)."""
    query = (
        sa.select(flow_runs.c.id)
        .where(prunable(cutoff))
        .order_by(flow_runs.c.created, flow_runs.c.id)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def count_prunable(conn: sa.Connection, cutoff: datetime) -> PruneCounts:
    """Count what a prune at ``cutoff`` would delete now (a dry run)."""
    ids = sa.select(flow_runs.c.id).where(prunable(cutoff)).scalar_subquery()
    task_ids = sa.select(task_runs.c.id).where(task_runs.c.flow_run_id.in_(ids))

    def count(table: sa.Table, where: sa.ColumnElement[bool]) -> int:
        query = sa.select(sa.func.count()).select_from(table).where(where)
        return int(conn.execute(query).scalar_one())

    return PruneCounts(
        runs=count(flow_runs, flow_runs.c.id.in_(ids)),
        task_runs=count(task_runs, task_runs.c.flow_run_id.in_(ids)),
        logs=count(logs, logs.c.flow_run_id.in_(ids)),
        states=count(flow_run_states, flow_run_states.c.flow_run_id.in_(ids))
        + count(task_run_states, task_run_states.c.task_run_id.in_(task_ids)),
        artifacts=count(artifacts, artifacts.c.flow_run_id.in_(ids)),
    )


def delete_runs(conn: sa.Connection, candidates: Sequence[UUID], cutoff: datetime) -> PrunedBatch:
    """Delete those of ``candidates`` still prunable at ``cutoff``, with all their rows.

    Run it in one write transaction; the candidates' rows are locked first on PostgreSQL
    (SQLite's ``BEGIN IMMEDIATE`` already holds the database), so a run cannot change
    under the delete.
    """
    batch = PrunedBatch()
    if not candidates:
        return batch
    chosen = (
        sa.select(flow_runs.c.id, flow_runs.c.output_path)
        .where(flow_runs.c.id.in_(list(candidates)), prunable(cutoff))
        .with_for_update(of=flow_runs)
    )
    found = conn.execute(chosen).all()
    if not found:
        return batch
    ids = [r.id for r in found]
    batch.run_ids = ids
    batch.outputs = [(r.id, r.output_path) for r in found if r.output_path]
    batch.outputs += [
        (r.flow_run_id, r.uri)
        for r in conn.execute(
            sa.select(artifacts.c.flow_run_id, artifacts.c.uri).where(
                artifacts.c.flow_run_id.in_(ids),
                artifacts.c.key == OUTPUT_ARTIFACT_KEY,
                artifacts.c.uri.is_not(None),
            )
        )
    ]
    batch.result_keys = _owned_result_keys(conn, ids)
    task_ids = sa.select(task_runs.c.id).where(task_runs.c.flow_run_id.in_(ids))
    counts = batch.counts
    counts.states += _delete(conn, task_run_states, task_run_states.c.task_run_id.in_(task_ids))
    counts.task_runs = _delete(conn, task_runs, task_runs.c.flow_run_id.in_(ids))
    counts.states += _delete(conn, flow_run_states, flow_run_states.c.flow_run_id.in_(ids))
    counts.logs = _delete(conn, logs, logs.c.flow_run_id.in_(ids))
    counts.artifacts = _delete(conn, artifacts, artifacts.c.flow_run_id.in_(ids))
    _delete(conn, notification_deliveries, notification_deliveries.c.flow_run_id.in_(ids))
    counts.runs = _delete(conn, flow_runs, flow_runs.c.id.in_(ids))
    return batch


def _delete(conn: sa.Connection, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
    return int(conn.execute(sa.delete(table).where(where)).rowcount)


def _owned_result_keys(conn: sa.Connection, ids: list[UUID]) -> list[str]:
    """Return the result keys the runs ``ids`` wrote that no kept run may read."""
    tr = task_runs.c
    written: dict[str, tuple[str | None, datetime | None]] = {}
    query = sa.select(tr.state_json, tr.cache_key, tr.cache_expiration).where(
        tr.flow_run_id.in_(ids), tr.state_type == StateType.COMPLETED.value
    )
    for r in conn.execute(query):
        state = _state_data(r.state_json)
        key = state.get("result_key")
        # A Cached state names a result another run wrote: not this run's file.
        if isinstance(key, str) and key and state.get("_name") != "Cached":
            written[key] = (r.cache_key, r.cache_expiration)
    if not written:
        return []
    at = now()
    keys = set()
    for key, (cache_key, expires) in written.items():
        if key == cache_key and (expires is None or expires > at):
            continue  # a valid cache entry: a future run may hit it
        keys.add(key)
    # Kept task runs that hit (or wrote) the same cache entry.
    shared = sa.select(tr.cache_key).where(tr.cache_key.in_(keys), tr.flow_run_id.not_in(ids))
    keys -= set(conn.execute(shared).scalars())
    # Kept runs that retry or repair a pruned one read its outputs.
    retries = sa.select(flow_runs.c.id).where(
        flow_runs.c.retry_of.in_(ids), flow_runs.c.id.not_in(ids)
    )
    texts = conn.execute(
        sa.union_all(
            sa.select(flow_run_states.c.state_json).where(
                flow_run_states.c.flow_run_id.in_(retries)
            ),
            sa.select(tr.state_json).where(tr.flow_run_id.in_(retries)),
        )
    ).scalars()
    for text in texts:
        if not keys:
            break
        keys = {k for k in keys if text is None or k not in text}
    return sorted(keys)


def _state_data(text: str | None) -> dict[str, Any]:
    """Return a stored state's ``data`` plus its name under ``_name`` ({} when unreadable)."""
    if not text:
        return {}
    try:
        state = json.loads(text)
    except ValueError:
        return {}
    data = state.get("data") if isinstance(state, dict) else None
    out = dict(data) if isinstance(data, dict) else {}
    out["_name"] = state.get("name") if isinstance(state, dict) else None
    return out
