"""Claiming due runs within concurrency limits, in one transaction.

:func:`claim_due_runs` runs inside one write transaction of the store.  It

1. serializes claimers: on PostgreSQL with a transaction-scoped advisory lock (SQLite's
   ``BEGIN IMMEDIATE`` already holds the database's write lock), so two dispatchers — two
   servers, a server and ``nbflow worker``, two workers — never both see a free slot;
2. counts the slots in use: batch runs that are Pending (incl. Submitting), Running or
   Cancelling, in total, per deployment, per flow and per tag;
3. selects the due runs: state type ``SCHEDULED`` (Scheduled, Late, AwaitingRetry) with
   ``expected_start_time <= now``, ``mode="batch"``, whose runner (the run's, else its
   deployment's, else the default runner) is one of the claimer's, oldest first;
4. claims, in that order, each run that fits every limit — the global one, its
   deployment's ``concurrency_limit``, and the ``concurrency_limits`` rows ``flow:<name>``
   and ``tag:<tag>`` — by proposing ``Pending`` through the policy with the run's row
   locked, and records the resolved runner on the run (and clears the infrastructure id
   of a run claimed again: its previous process is gone).

A due run held back by a limit stays as it is and gets one log line (logger
``nbflow.dispatcher``) saying which limit it waits for, again only when the reason changes.
Limits count batch runs only: interactive runs and in-process ``@flow`` calls are not
dispatched, so they hold no slot.  The concurrency-limit rows are read and written here too.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import sqlalchemy as sa

from nbflow.exceptions import NotFound, ValidationError
from nbflow.orchestration.store import rows
from nbflow.orchestration.store.flow_runs import RUN_SELECT, set_state
from nbflow.orchestration.store.log_order import lock_log_streams
from nbflow.orchestration.store.tables import (
    concurrency_limits,
    deployments,
    flow_runs,
    flows,
    logs,
)
from nbflow.schemas import ConcurrencyLimit, FlowRun, SetStateStatus
from nbflow.states import Pending, StateType, now

__all__ = [
    "ACTIVE_TYPES",
    "Claim",
    "claim_due_runs",
    "delete_limit",
    "limit_key_problem",
    "read_limits",
    "set_limit",
]

#: State types that hold a concurrency slot.
ACTIVE_TYPES = (StateType.PENDING, StateType.RUNNING, StateType.CANCELLING)
#: Key of the PostgreSQL advisory lock that serializes claimers ("nbclaim").
CLAIM_LOCK_KEY = 0x6E62_636C_6169_6D
#: Most due runs looked at in one claim.
MAX_CANDIDATES = 500
#: The logger of the "waiting for a concurrency slot" lines in a held-back run's logs.
WAITING_LOGGER = "nbflow.dispatcher"


@dataclass(frozen=True)
class Claim:
    """A run just claimed (Pending) and its deployment's job variables (None: no deployment)."""

    flow_run: FlowRun
    deployment_job_variables: dict[str, Any] | None


@dataclass
class _Slots:
    """Slots in use, by limit key (``global``, ``deployment:<id>``, ``flow:<name>``, ``tag:<t>``)."""

    used: Counter[str] = field(default_factory=Counter)

    def add(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.used[key] += 1


def _keys(deployment_id: UUID | None, flow_name: str, tags: Sequence[str]) -> list[str]:
    keys = ["global", f"flow:{flow_name}", *(f"tag:{t}" for t in dict.fromkeys(tags))]
    if deployment_id is not None:
        keys.append(f"deployment:{deployment_id}")
    return keys


def claim_due_runs(
    conn: sa.Connection,
    runners: Sequence[str],
    *,
    claimer: str,
    default_runner: str,
    limit: int | None = None,
    global_limit: int | None = None,
    at: datetime | None = None,
) -> list[Claim]:
    """Claim due runs of ``runners`` that fit every concurrency limit; see the module docstring."""
    if limit is not None and limit < 1:
        return []
    at = at or now()
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(CLAIM_LOCK_KEY)))
    limits: dict[str, int] = {
        r.key: r.limit for r in conn.execute(sa.select(concurrency_limits)).all()
    }
    if global_limit is not None:
        limits["global"] = global_limit
    c = flow_runs.c
    runner = sa.func.coalesce(c.runner, deployments.c.runner, default_runner)
    due = conn.execute(
        sa.select(
            c.id,
            c.deployment_id,
            c.tags,
            flows.c.name.label("flow_name"),
            runner.label("resolved_runner"),
            deployments.c.concurrency_limit,
            deployments.c.job_variables.label("deployment_job_variables"),
        )
        .select_from(flow_runs)
        .join(flows, flows.c.id == c.flow_id)
        .outerjoin(deployments, deployments.c.id == c.deployment_id)
        .where(
            c.state_type == StateType.SCHEDULED.value,
            c.expected_start_time <= at,
            c.mode == "batch",
            runner.in_(list(runners)),
        )
        .order_by(c.expected_start_time, c.id)
        .limit(MAX_CANDIDATES)
    ).all()
    if not due:
        return []
    slots = _Slots()
    active = conn.execute(
        sa.select(c.deployment_id, c.tags, flows.c.name.label("flow_name"))
        .select_from(flow_runs)
        .join(flows, flows.c.id == c.flow_id)
        .where(c.state_type.in_([t.value for t in ACTIVE_TYPES]), c.mode == "batch")
    ).all()
    for holder in active:
        slots.add(_keys(holder.deployment_id, holder.flow_name, holder.tags or []))
    claimed: list[tuple[UUID, dict[str, Any] | None]] = []
    waiting: dict[UUID, str] = {}
    for row in due:
        run_limits = dict(limits)
        if row.deployment_id is not None and row.concurrency_limit is not None:
            run_limits[f"deployment:{row.deployment_id}"] = row.concurrency_limit
        keys = _keys(row.deployment_id, row.flow_name, row.tags or [])
        full = next((k for k in keys if k in run_limits and slots.used[k] >= run_limits[k]), None)
        if full is not None:
            waiting[row.id] = _waiting_message(full, slots.used[full], run_limits[full])
            continue
        result = set_state(conn, row.id, Pending(message=f"claimed by {claimer}"), force=False)
        if result.status is not SetStateStatus.ACCEPT:
            continue
        # The resolved runner is the run's from now on; a run claimed again (AwaitingRetry)
        # gets new infrastructure, so the previous one's id no longer names it.
        conn.execute(
            sa.update(flow_runs)
            .where(c.id == row.id)
            .values(runner=row.resolved_runner, infrastructure_id=None)
        )
        slots.add(keys)
        claimed.append((row.id, row.deployment_job_variables))
        if limit is not None and len(claimed) >= limit:
            break
    _log_waiting(conn, waiting, at)
    if not claimed:
        return []
    found = {
        r.id: rows.read_flow_run(r)
        for r in conn.execute(RUN_SELECT.where(c.id.in_([i for i, _ in claimed]))).all()
    }
    return [Claim(found[i], None if jv is None else dict(jv)) for i, jv in claimed]


def _waiting_message(key: str, used: int, limit: int) -> str:
    kind, _, name = key.partition(":")
    what = {
        "global": "runs running across deployments",
        "deployment": "runs of its deployment running",
        "flow": f"runs of flow {name} running",
        "tag": f"runs tagged {name} running",
    }[kind]
    return f"waiting for a concurrency slot ({used}/{limit} {what})"


def _log_waiting(conn: sa.Connection, waiting: dict[UUID, str], at: datetime) -> None:
    """Log why each held-back run waits, once per change of the reason (logger ``WAITING_LOGGER``)."""
    if not waiting:
        return
    last: dict[UUID, str] = {}
    for r in conn.execute(
        sa.select(logs.c.flow_run_id, logs.c.message)
        .where(logs.c.logger == WAITING_LOGGER, logs.c.flow_run_id.in_(list(waiting)))
        .order_by(logs.c.id)
    ).all():
        last[r.flow_run_id] = r.message
    new = [
        {
            "flow_run_id": run_id,
            "task_run_id": None,
            "level": logging.INFO,
            "logger": WAITING_LOGGER,
            "message": message,
            "timestamp": at,
        }
        for run_id, message in waiting.items()
        if last.get(run_id) != message
    ]
    if new:
        lock_log_streams(conn, waiting)  # see log_order: the log cursor skips nothing
        conn.execute(sa.insert(logs), new)


# -- the concurrency_limits rows ---------------------------------------------------------
def limit_key_problem(key: str) -> str | None:
    """Return what is wrong with a limit key (None: it is ``flow:<name>`` or ``tag:<tag>``)."""
    kind, sep, name = key.partition(":")
    if not sep or kind not in ("flow", "tag") or not name.strip():
        return "is not flow:<flow name> or tag:<tag>"
    if len(key) > 300:
        return "is longer than 300 characters"
    return None


def read_limits(conn: sa.Connection) -> list[ConcurrencyLimit]:
    """Return every flow and tag concurrency limit, by key."""
    found = conn.execute(sa.select(concurrency_limits).order_by(concurrency_limits.c.key)).all()
    return [ConcurrencyLimit(key=r.key, limit=r.limit) for r in found]


def set_limit(conn: sa.Connection, key: str, limit: int) -> ConcurrencyLimit:
    """Create or change the limit of ``key``."""
    problem = limit_key_problem(key)
    if problem is not None:
        raise ValidationError("key", key, problem, "e.g. flow:nightly-report or tag:gpu")
    if limit < 0:
        raise ValidationError("limit", limit, "must be 0 or more", "0 holds every run back")
    at = now()
    table = concurrency_limits
    updated = conn.execute(
        sa.update(table).where(table.c.key == key).values(limit=limit, updated=at)
    ).rowcount
    if not updated:
        conn.execute(
            sa.insert(table).values(id=uuid4(), key=key, limit=limit, created=at, updated=at)
        )
    return ConcurrencyLimit(key=key, limit=limit)


def delete_limit(conn: sa.Connection, key: str) -> None:
    """Remove the limit of ``key`` (``NotFound`` if there is none)."""
    gone = conn.execute(sa.delete(concurrency_limits).where(concurrency_limits.c.key == key))
    if gone.rowcount == 0:
        raise NotFound("concurrency limit", key)
