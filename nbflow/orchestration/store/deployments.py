"""Deployment transactions: upsert by flow and name, read with schedules, update, delete.

Every function takes a connection inside an open transaction; the
:class:`~nbflow.orchestration.store.store.Store` owns the transactions and retries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import pydantic
import sqlalchemy as sa

from nbflow.exceptions import NotFound
from nbflow.orchestration.store import rows
from nbflow.orchestration.store.tables import deployments, flow_runs, flows, schedules
from nbflow.schemas import Deployment, Schedule
from nbflow.states import StateType, now

__all__ = ["FIXED_FIELDS", "delete", "read", "replace_schedules", "update", "upsert"]

#: Fields ``update`` never changes.
FIXED_FIELDS = frozenset({"id", "created", "updated"})


def read(conn: sa.Connection, query: sa.Select[Any]) -> list[Deployment]:
    """Return the deployments ``query`` selects, each with its schedules in order."""
    found = conn.execute(query).all()
    by_deployment: dict[UUID, list[Schedule]] = {r.id: [] for r in found}
    if by_deployment:
        sched = conn.execute(
            sa.select(schedules)
            .where(schedules.c.deployment_id.in_(list(by_deployment)))
            .order_by(schedules.c.deployment_id, schedules.c.position)
        ).all()
        for s in sched:
            by_deployment[s.deployment_id].append(rows.read_schedule(s))
    return [rows.read_deployment(r, by_deployment[r.id]) for r in found]


def replace_schedules(conn: sa.Connection, deployment_id: UUID, items: Sequence[Schedule]) -> None:
    """Replace the deployment's schedules with ``items``."""
    conn.execute(sa.delete(schedules).where(schedules.c.deployment_id == deployment_id))
    if items:
        conn.execute(
            sa.insert(schedules),
            [rows.schedule_row(s, deployment_id, i) for i, s in enumerate(items)],
        )


def upsert(conn: sa.Connection, insert: Any, new: Deployment) -> Deployment:
    """Insert ``new`` or update the deployment with its flow and name (``insert``: the
    dialect's INSERT of the deployments table)."""
    if conn.execute(sa.select(flows.c.id).where(flows.c.id == new.flow_id)).first() is None:
        raise NotFound("flow", new.flow_id)
    row = rows.deployment_row(new)
    stmt = insert.values(row)
    keep = {"id", "flow_id", "name", "created"}
    stmt = stmt.on_conflict_do_update(
        index_elements=[deployments.c.flow_id, deployments.c.name],
        set_={k: stmt.excluded[k] for k in row if k not in keep},
    )
    conn.execute(stmt)
    stored_id = conn.execute(
        sa.select(deployments.c.id).where(
            deployments.c.flow_id == new.flow_id, deployments.c.name == new.name
        )
    ).scalar_one()
    replace_schedules(conn, stored_id, new.schedules)
    return read(conn, sa.select(deployments).where(deployments.c.id == stored_id))[0]


def update(conn: sa.Connection, deployment_id: UUID, changes: Mapping[str, Any]) -> Deployment:
    """Apply ``changes`` to the deployment (row locked), validated as a whole."""
    query = sa.select(deployments).where(deployments.c.id == deployment_id)
    found = read(conn, query.with_for_update())
    if not found:
        raise NotFound("deployment", deployment_id)
    try:
        updated = Deployment.model_validate({**found[0].model_dump(), **changes, "updated": now()})
    except pydantic.ValidationError as exc:
        raise rows.validation_error(exc) from exc
    row = rows.deployment_row(updated)
    conn.execute(
        sa.update(deployments)
        .where(deployments.c.id == deployment_id)
        .values({k: v for k, v in row.items() if k not in ("id", "created")})
    )
    if "schedules" in changes:
        replace_schedules(conn, deployment_id, updated.schedules)
    return read(conn, query)[0]


def delete(conn: sa.Connection, deployment_id: UUID) -> None:
    """Delete the deployment and its not-yet-started (SCHEDULED) runs."""
    conn.execute(
        sa.delete(flow_runs).where(
            flow_runs.c.deployment_id == deployment_id,
            flow_runs.c.state_type == StateType.SCHEDULED.value,
        )
    )
    gone = conn.execute(sa.delete(deployments).where(deployments.c.id == deployment_id))
    if gone.rowcount == 0:
        raise NotFound("deployment", deployment_id)
