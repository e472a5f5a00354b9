"""Flow-run transactions: creation through the gate, filtering, state transitions, close-out.

Every function takes a connection inside an open write (or read) transaction; the
:class:`~nbflow.orchestration.store.store.Store` owns the transactions and retries.

Close-out: when a run enters a terminal state, the same transaction ends every task run
of it that is still open (Scheduled, Pending, Running, Paused, Cancelling) and appends
that state to the task run's history, so no task run stays Running in a finished run
(``NotReady``, the engine's final answer for a task whose upstream failed, is kept):

==================  ==============================  ===============================
the run became      an open task that had started   a task that had not started
==================  ==============================  ===============================
Cancelled           Cancelled                       Cancelled
Crashed             Crashed                         Crashed
Failed, Completed   Crashed (it never reported an   Cancelled (it never ran)
                    end: its process stopped)
==================  ==============================  ===============================
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import sqlalchemy as sa

from nbflow.exceptions import FlowRunNotFound, NotFound, ObjectAlreadyExists, ValidationError
from nbflow.orchestration.policy import evaluate
from nbflow.orchestration.store import rows
from nbflow.orchestration.store.due import note_due
from nbflow.orchestration.store.names import generate_run_name
from nbflow.orchestration.store.tables import (
    deployments,
    flow_run_states,
    flow_runs,
    flows,
    task_run_states,
    task_runs,
)
from nbflow.schemas import (
    FlowRun,
    FlowRunCreate,
    FlowRunFilter,
    OrchestrationResult,
    SetStateStatus,
)
from nbflow.states import TERMINAL_TYPES, Scheduled, State, StateType, now

__all__ = [
    "RUN_SELECT",
    "append_state",
    "close_out_task_runs",
    "closing_task_state",
    "create",
    "filtered",
    "find_by_key",
    "propose",
    "set_state",
]

#: What a proposer may answer after seeing the locked run: a state to propose through
#: the gate, or a result to return without proposing anything.
Choice = State | OrchestrationResult

#: Task-run state types that are still open (not terminal).
OPEN_TASK_TYPES = (
    StateType.SCHEDULED,
    StateType.PENDING,
    StateType.RUNNING,
    StateType.PAUSED,
    StateType.CANCELLING,
)

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
    """Insert a run for ``fr`` as given (or return the one with its idempotency key).

    The lifecycle (:mod:`nbflow.orchestration.lifecycle`) has merged the deployment's
    defaults and validated the parameters.  The initial state (default ``Scheduled(now)``)
    goes through the gate like every later one, which fills in the bookkeeping.
    """
    flow_name = conn.execute(sa.select(flows.c.name).where(flows.c.id == fr.flow_id)).scalar()
    if flow_name is None:
        raise NotFound("flow", fr.flow_id)
    if fr.deployment_id is not None:
        found = sa.select(deployments.c.id).where(deployments.c.id == fr.deployment_id)
        if conn.execute(found).first() is None:
            raise NotFound("deployment", fr.deployment_id)
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
        parameters=fr.parameters,
        tags=fr.tags,
        runner=fr.runner,
        job_variables=fr.job_variables,
        idempotency_key=fr.idempotency_key,
        notebook_path=fr.notebook_path,
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
    note_due(conn, run)
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


def filtered(
    query: sa.Select[Any], f: FlowRunFilter, *, at: datetime | None = None
) -> sa.Select[Any]:
    """Return ``query`` (over flow runs joined with flows) restricted by ``f``'s criteria.

    ``at`` is the moment that splits the history and upcoming views (None: now).
    """
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
    if f.parent_flow_run_ids is not None:
        query = query.where(c.parent_flow_run_id.in_(f.parent_flow_run_ids))
    if f.start_after is not None:
        query = query.where(c.expected_start_time >= f.start_after)
    if f.start_before is not None:
        query = query.where(c.expected_start_time <= f.start_before)
    if f.updated_after is not None:
        query = query.where(c.updated > f.updated_after)
    if f.view is not None:
        at = at or now()
        waiting = sa.and_(c.state_type == StateType.SCHEDULED.value, c.expected_start_time > at)
        history = sa.or_(
            c.state_type.is_(None),
            c.state_type != StateType.SCHEDULED.value,
            c.expected_start_time.is_(None),
            c.expected_start_time <= at,
        )
        query = query.where(waiting if f.view == "upcoming" else history)
    return query


def set_state(
    conn: sa.Connection, flow_run_id: UUID, state: State, *, force: bool
) -> OrchestrationResult:
    """Lock the run, let the policy decide on ``state``, and apply an accepted new state."""
    return propose(conn, flow_run_id, lambda _run: state, force=force)


def propose(
    conn: sa.Connection,
    flow_run_id: UUID,
    choose: Callable[[FlowRun], Choice],
    *,
    force: bool = False,
) -> OrchestrationResult:
    """Lock the run, let ``choose`` pick the state from the locked run, and run the gate.

    ``choose`` sees the committed current run under its row lock, so a decision that
    depends on the current state (cancel: Cancelled or Cancelling) cannot race another
    proposer.  It may raise to abort the transaction, or return a result to skip the gate.
    An accepted terminal state closes out the run's open task runs in this transaction.
    """
    row = conn.execute(
        RUN_SELECT.where(flow_runs.c.id == flow_run_id).with_for_update(of=flow_runs)
    ).first()
    if row is None:
        raise FlowRunNotFound(flow_run_id)
    run = rows.read_flow_run(row)
    choice = choose(run)
    if isinstance(choice, OrchestrationResult):
        return choice
    state = choice
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
        if state.type in TERMINAL_TYPES:
            close_out_task_runs(conn, flow_run_id, state)
        elif state.type is StateType.SCHEDULED:
            note_due(conn, run.model_copy(update=decision.run_updates))
    return decision.result


def closing_task_state(run_state: State, task_state: State | None) -> State:
    """Return the terminal state an open task run gets when its run ends in ``run_state``.

    See the module docstring's table.
    """
    started = task_state is not None and task_state.type in (
        StateType.RUNNING,
        StateType.CANCELLING,
    )
    end_type = run_state.type
    if end_type in (StateType.FAILED, StateType.COMPLETED):
        end_type = StateType.CRASHED if started else StateType.CANCELLED
    verb = {
        StateType.CANCELLED: "cancelled",
        StateType.CRASHED: "crashed",
    }.get(run_state.type, run_state.type.value.lower())
    message = (
        f"closed out: the flow run {verb} while this task run was "
        f"{task_state.name if task_state is not None else 'not started'}"
    )
    return State(type=end_type, message=message, timestamp=run_state.timestamp)


def close_out_task_runs(conn: sa.Connection, flow_run_id: UUID, run_state: State) -> int:
    """End the run's open task runs (see the module docstring); return how many."""
    open_rows = conn.execute(
        sa.select(
            task_runs.c.id,
            task_runs.c.state_json,
            task_runs.c.start_time,
            task_runs.c.total_run_time,
        ).where(
            task_runs.c.flow_run_id == flow_run_id,
            task_runs.c.state_type.in_([t.value for t in OPEN_TASK_TYPES]),
            # NotReady is the engine's last word on a task whose upstream failed.
            task_runs.c.state_name != "NotReady",
        )
    ).all()
    if not open_rows:
        return 0
    at = run_state.timestamp
    updates: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    for r in open_rows:
        current = rows.read_state(r.state_json)
        end = closing_task_state(run_state, current).model_copy(update={"id": uuid4()})
        total = r.total_run_time
        if current is not None and current.type is StateType.RUNNING:
            total += max(0.0, (at - current.timestamp).total_seconds())
        updates.append(
            {
                "_id": r.id,
                "_state_type": end.type.value,
                "_state_name": end.name,
                "_state_json": end.model_dump_json(),
                "_end_time": at,
                "_total_run_time": total,
                "_updated": at,
            }
        )
        history.append(
            {
                "state_id": end.id,
                "task_run_id": r.id,
                "type": end.type.value,
                "name": end.name,
                "timestamp": at,
                "state_json": end.model_dump_json(),
            }
        )
    conn.execute(
        sa.update(task_runs)
        .where(task_runs.c.id == sa.bindparam("_id"))
        .values(
            state_type=sa.bindparam("_state_type"),
            state_name=sa.bindparam("_state_name"),
            state_json=sa.bindparam("_state_json"),
            end_time=sa.bindparam("_end_time"),
            total_run_time=sa.bindparam("_total_run_time"),
            updated=sa.bindparam("_updated"),
        ),
        updates,
    )
    conn.execute(sa.insert(task_run_states), history)
    return len(open_rows)
