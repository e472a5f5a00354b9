"""Flow-run transactions: creation through the gate, filtering, and state transitions.

Every function takes a connection inside an open write (or read) transaction; the
:class:`~nbflow.orchestration.store.store.Store` owns the transactions and retries.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import sqlalchemy as sa

from nbflow.exceptions import FlowRunNotFound, NotFound, ObjectAlreadyExists, ValidationError
from nbflow.orchestration.policy import evaluate
from nbflow.orchestration.store import rows
from nbflow.orchestration.store.names import generate_run_name
from nbflow.orchestration.store.tables import deployments, flow_run_states, flow_runs, flows
from nbflow.schemas import (
    FlowRun,
    FlowRunCreate,
    FlowRunFilter,
    OrchestrationResult,
    SetStateStatus,
)
from nbflow.states import Scheduled, State, now

__all__ = [
    "RUN_SELECT",
    "append_state",
    "create",
    "filtered",
    "find_by_key",
    "set_state",
]

#: Flow-run rows with their flow's name.
RUN_SELECT = sa.select(flow_runs, flows.c.name.label("flow_name")).join(
    flows, flows.c.id == flow_runs.c.flow_id
)


def find_by_key(conn: sa.Connection, fr: FlowRunCreate) -> FlowRun | None:
    """Return the run of ``fr``'s deployment (or flow) with ``fr``'s idempotency key."""
    query = RUN_SELECT.where(
        flow_runs.c.flow_id == fr.flow_id,
        flow_runs.c.idempotency_key == fr.idempotency_key,
        flow_runs.c.deployment_id.is_(None)
        if fr.deployment_id is None
        else flow_runs.c.deployment_id == fr.deployment_id,
    )
    row = conn.execute(query).first()
    return None if row is None else rows.read_flow_run(row)


def create(conn: sa.Connection, fr: FlowRunCreate) -> FlowRun:
    """Insert a run for ``fr`` (or return the one with its idempotency key).

    A run of a deployment takes the deployment's parameters (overridden by the run's),
    runner and notebook path as defaults.  The initial state (default ``Scheduled(now)``)
    goes through the gate like every later one, which fills in the bookkeeping.
    """
    flow_name = conn.execute(sa.select(flows.c.name).where(flows.c.id == fr.flow_id)).scalar()
    if flow_name is None:
        raise NotFound("flow", fr.flow_id)
    parameters, runner, notebook_path = dict(fr.parameters), fr.runner, fr.notebook_path
    if fr.deployment_id is not None:
        dep = conn.execute(
            sa.select(deployments).where(deployments.c.id == fr.deployment_id)
        ).first()
        if dep is None:
            raise NotFound("deployment", fr.deployment_id)
        parameters = {**dep.parameters, **parameters}
        runner = runner or dep.runner
        notebook_path = notebook_path or dep.notebook_path
    if fr.idempotency_key is not None:
        if conn.dialect.name == "postgresql":
            # Serialize creators of one key (the unique constraint cannot: runs without a
            # deployment have a NULL deployment_id).  SQLite's BEGIN IMMEDIATE already does.
            scope = f"{fr.deployment_id or fr.flow_id}:{fr.idempotency_key}"
            conn.execute(
                sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(scope, 0)))
            )
        existing = find_by_key(conn, fr)
        if existing is not None:
            return existing
    state = fr.state or Scheduled()
    at = now()
    run = FlowRun(
        name=fr.name or generate_run_name(),
        flow_id=fr.flow_id,
        flow_name=flow_name,
        deployment_id=fr.deployment_id,
        parameters=parameters,
        tags=fr.tags,
        runner=runner,
        job_variables=fr.job_variables,
        idempotency_key=fr.idempotency_key,
        notebook_path=notebook_path,
        mode=fr.mode,
        retry_of=fr.retry_of,
        parent_flow_run_id=fr.parent_flow_run_id,
        parent_task_run_id=fr.parent_task_run_id,
        expected_start_time=at,
        created=at,
        updated=at,
    )
    decision = evaluate(run, state, at=at)
    if decision.status is not SetStateStatus.ACCEPT:  # pragma: no cover - a new run accepts
        raise ValidationError("state", state, decision.result.reason or "refused")
    run = run.model_copy(update=decision.run_updates)
    conn.execute(sa.insert(flow_runs).values(rows.flow_run_row(run)))
    append_state(conn, run.id, state)
    return run


def append_state(conn: sa.Connection, run_id: UUID, state: State) -> None:
    """Append ``state`` to the run's history."""
    conn.execute(
        sa.insert(flow_run_states).values(
            state_id=state.id,
            flow_run_id=run_id,
            type=state.type.value,
            name=state.name,
            timestamp=state.timestamp,
            state_json=state.model_dump_json(),
        )
    )


def filtered(query: sa.Select[Any], f: FlowRunFilter) -> sa.Select[Any]:
    """Return ``query`` (over flow runs joined with flows) restricted by ``f``'s criteria."""
    c = flow_runs.c
    if f.state_types is not None:
        query = query.where(c.state_type.in_([t.value for t in f.state_types]))
    if f.state_names is not None:
        query = query.where(c.state_name.in_(f.state_names))
    if f.flow_ids is not None:
        query = query.where(c.flow_id.in_(f.flow_ids))
    if f.flow_names is not None:
        query = query.where(flows.c.name.in_(f.flow_names))
    if f.deployment_ids is not None:
        query = query.where(c.deployment_id.in_(f.deployment_ids))
    if f.start_after is not None:
        query = query.where(c.expected_start_time >= f.start_after)
    if f.start_before is not None:
        query = query.where(c.expected_start_time <= f.start_before)
    return query


def set_state(
    conn: sa.Connection, flow_run_id: UUID, state: State, *, force: bool
) -> OrchestrationResult:
    """Lock the run, let the policy decide on ``state``, and apply an accepted new state."""
    row = conn.execute(
        RUN_SELECT.where(flow_runs.c.id == flow_run_id).with_for_update(of=flow_runs)
    ).first()
    if row is None:
        raise FlowRunNotFound(flow_run_id)
    run = rows.read_flow_run(row)
    seen = conn.execute(
        sa.select(flow_run_states.c.flow_run_id).where(flow_run_states.c.state_id == state.id)
    ).first()
    if seen is not None and seen.flow_run_id != flow_run_id:
        raise ObjectAlreadyExists(
            f"state id {state.id} belongs to flow run {seen.flow_run_id}; "
            "propose a new State object"
        )
    accepted = {state.id} if seen is not None else set()
    decision = evaluate(run, state, force=force, accepted_ids=accepted, at=now())
    if decision.status is SetStateStatus.ACCEPT and decision.is_new:
        updates = dict(decision.run_updates)
        values = rows.state_columns(updates.pop("state", state))
        values.update(updates)
        conn.execute(sa.update(flow_runs).where(flow_runs.c.id == flow_run_id).values(values))
        append_state(conn, flow_run_id, state)
    return decision.result
