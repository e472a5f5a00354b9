"""Deployment transactions: upsert by flow and name, read with schedules, update, delete,
and the version history every create and update writes.

Every function takes a connection inside an open transaction; the
:class:`~nbflow.orchestration.store.store.Store` owns the transactions and retries.
An update locks the deployment's row, checks the version the edit was made from (the
optimistic lock: a stale one raises :class:`~nbflow.exceptions.DeploymentVersionConflict`
naming what changed since), applies the changes and records the new version in the same
transaction.  An update that changes nothing records no version.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any
from uuid import UUID, uuid4

import pydantic
import sqlalchemy as sa

from nbflow.exceptions import DeploymentVersionConflict, NotFound, ValidationError
from nbflow.orchestration.deployment_diff import (
    EDITABLE_FIELDS,
    definition_of,
    field_changes,
    notebook_sha256,
    summarize,
)
from nbflow.orchestration.store import rows
from nbflow.orchestration.store.tables import (
    deployment_versions,
    deployments,
    flow_runs,
    flows,
    schedules,
)
from nbflow.schemas import (
    Deployment,
    DeploymentVersion,
    DeploymentVersionDetail,
    FieldChange,
    Schedule,
)
from nbflow.states import StateType, now

__all__ = [
    "FIXED_FIELDS",
    "apply_update",
    "check_definition",
    "delete",
    "plan_update",
    "read",
    "read_version",
    "read_versions",
    "replace_schedules",
    "update",
    "upsert",
    "upsert_with_changes",
]

#: Fields ``update`` never changes.
FIXED_FIELDS = frozenset({"id", "created", "updated", "version"})
#: Who made a version when the caller does not say (a store opened without a server).
DEFAULT_AUTHOR = "cli"


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


def upsert(conn: sa.Connection, new: Deployment, *, author: str = DEFAULT_AUTHOR) -> Deployment:
    """Insert ``new`` (version 1) or update the deployment with its flow and name (a new
    version when anything changed)."""
    return upsert_with_changes(conn, new, author=author)[0]


def upsert_with_changes(
    conn: sa.Connection,
    new: Deployment,
    *,
    author: str = DEFAULT_AUTHOR,
    given: Collection[str] | None = None,
) -> tuple[Deployment, list[FieldChange] | None]:
    """Like :func:`upsert`, also returning the fields changed (None: created).

    With ``given``, an existing deployment changes only those fields (a redeploy keeps
    what it does not mention, e.g. a run mode chosen in the dialog); without, all.
    """
    # Locking the flow's row serializes concurrent deploys of one flow (PostgreSQL; SQLite
    # has one writer): the second sees the first's deployment and updates it.
    flow = sa.select(flows.c.id).where(flows.c.id == new.flow_id).with_for_update()
    if conn.execute(flow).first() is None:
        raise NotFound("flow", new.flow_id)
    same = sa.select(deployments).where(
        deployments.c.flow_id == new.flow_id, deployments.c.name == new.name
    )
    existing = read(conn, same.with_for_update())
    if existing:
        names = [n for n in EDITABLE_FIELDS if given is None or n in given]
        changes = {name: getattr(new, name) for name in names}
        return apply_update(conn, existing[0].id, changes, author=author)
    check_definition(new)
    created = new.model_copy(update={"version": 1})
    conn.execute(sa.insert(deployments).values(rows.deployment_row(created)))
    replace_schedules(conn, created.id, created.schedules)
    stored = read(conn, sa.select(deployments).where(deployments.c.id == created.id))[0]
    _record_version(conn, stored, author, summarize([], created=True))
    return stored, None


def check_definition(deployment: Deployment) -> None:
    """Refuse a definition whose fields contradict each other."""
    if deployment.run_mode == "file" and not deployment.notebook_path:
        raise ValidationError(
            "run_mode",
            "file",
            "needs a notebook_path (the file its runs execute)",
            "give notebook_path, or use run_mode snapshot for an uploaded notebook",
        )


def plan_update(
    conn: sa.Connection,
    deployment_id: UUID,
    changes: Mapping[str, Any],
    *,
    expected_version: int | None = None,
    lock: bool = False,
) -> tuple[Deployment, Deployment, list[FieldChange]]:
    """Return the deployment, what ``changes`` make of it and the fields they change.

    Raises :class:`DeploymentVersionConflict` when ``expected_version`` is given and is
    not the deployment's current version (nothing is changed).
    """
    query = sa.select(deployments).where(deployments.c.id == deployment_id)
    found = read(conn, query.with_for_update() if lock else query)
    if not found:
        raise NotFound("deployment", deployment_id)
    current = found[0]
    if expected_version is not None and expected_version != current.version:
        raise DeploymentVersionConflict(
            deployment_id,
            expected_version,
            current.version,
            _changed_since(conn, current, expected_version),
        )
    try:
        updated = Deployment.model_validate({**current.model_dump(), **changes, "updated": now()})
    except pydantic.ValidationError as exc:
        raise rows.validation_error(exc) from exc
    check_definition(updated)
    diff = field_changes(
        definition_of(current),
        definition_of(updated),
        old_notebook=(notebook_sha256(current.notebook), current.notebook),
        new_notebook=(notebook_sha256(updated.notebook), updated.notebook),
    )
    if not any(c.field == "schedules" for c in diff):
        # Same schedules (only their ids differ): keep the stored ones and their ids.
        updated = updated.model_copy(update={"schedules": current.schedules})
    return current, updated, diff


def update(
    conn: sa.Connection,
    deployment_id: UUID,
    changes: Mapping[str, Any],
    *,
    author: str = DEFAULT_AUTHOR,
    expected_version: int | None = None,
) -> Deployment:
    """Apply ``changes`` to the deployment (row locked), validated as a whole; record the
    new version when anything changed."""
    return apply_update(
        conn, deployment_id, changes, author=author, expected_version=expected_version
    )[0]


def apply_update(
    conn: sa.Connection,
    deployment_id: UUID,
    changes: Mapping[str, Any],
    *,
    author: str = DEFAULT_AUTHOR,
    expected_version: int | None = None,
) -> tuple[Deployment, list[FieldChange]]:
    """Like :func:`update`, also returning the fields that changed (none: nothing stored)."""
    current, updated, diff = plan_update(
        conn, deployment_id, changes, expected_version=expected_version, lock=True
    )
    if not diff:
        return current, diff
    updated = updated.model_copy(update={"version": current.version + 1})
    row = rows.deployment_row(updated)
    conn.execute(
        sa.update(deployments)
        .where(deployments.c.id == deployment_id)
        .values({k: v for k, v in row.items() if k not in ("id", "created")})
    )
    if any(c.field == "schedules" for c in diff):
        replace_schedules(conn, deployment_id, updated.schedules)
    stored = read(conn, sa.select(deployments).where(deployments.c.id == deployment_id))[0]
    _record_version(conn, stored, author, summarize(diff))
    return stored, diff


def _record_version(
    conn: sa.Connection,
    deployment: Deployment,
    author: str,
    summary: str,
) -> None:
    """Write the deployment's current definition as its version ``deployment.version``.

    The notebook is stored on a version only when its hash is new for the deployment.
    """
    digest = notebook_sha256(deployment.notebook)
    store_notebook = digest is not None and _snapshot(conn, deployment.id, digest) is None
    conn.execute(
        sa.insert(deployment_versions).values(
            id=uuid4(),
            deployment_id=deployment.id,
            version=deployment.version,
            created=deployment.updated,
            author=author[:200],
            summary=summary,
            definition=definition_of(deployment),
            notebook_sha256=digest,
            notebook=deployment.notebook if store_notebook else None,
        )
    )


def _snapshot(conn: sa.Connection, deployment_id: UUID, digest: str) -> dict[str, Any] | None:
    """Return the stored notebook with this hash among the deployment's versions."""
    found = conn.execute(
        sa.select(deployment_versions.c.notebook)
        .where(
            deployment_versions.c.deployment_id == deployment_id,
            deployment_versions.c.notebook_sha256 == digest,
            deployment_versions.c.notebook.is_not(None),
        )
        .order_by(deployment_versions.c.version)
        .limit(1)
    ).first()
    return None if found is None else dict(found.notebook)


def _changed_since(conn: sa.Connection, current: Deployment, version: int) -> list[str]:
    """Return the fields that changed between ``version`` and ``current`` (all: unknown)."""
    try:
        then = read_version(conn, current.id, version)
    except NotFound:
        return []
    diff = field_changes(
        then.definition,
        definition_of(current),
        old_notebook=(then.notebook_sha256, None),
        new_notebook=(notebook_sha256(current.notebook), None),
    )
    return [c.field for c in diff]


def read_versions(conn: sa.Connection, deployment_id: UUID) -> list[DeploymentVersion]:
    """Return the deployment's versions, newest first (``NotFound``: no such deployment)."""
    if (
        conn.execute(sa.select(deployments.c.id).where(deployments.c.id == deployment_id)).first()
        is None
    ):
        raise NotFound("deployment", deployment_id)
    c = deployment_versions.c
    found = conn.execute(
        sa.select(c.deployment_id, c.version, c.created, c.author, c.summary, c.notebook_sha256)
        .where(c.deployment_id == deployment_id)
        .order_by(c.version.desc())
    ).all()
    return [DeploymentVersion.model_validate(r._asdict()) for r in found]


def read_version(conn: sa.Connection, deployment_id: UUID, version: int) -> DeploymentVersionDetail:
    """Return one version with its definition and notebook snapshot."""
    c = deployment_versions.c
    row = conn.execute(
        sa.select(deployment_versions).where(c.deployment_id == deployment_id, c.version == version)
    ).first()
    if row is None:
        raise NotFound("deployment version", f"{deployment_id} v{version}")
    data = row._asdict()
    del data["id"]
    if data["notebook"] is None and data["notebook_sha256"] is not None:
        data["notebook"] = _snapshot(conn, deployment_id, data["notebook_sha256"])
    return DeploymentVersionDetail.model_validate(data)


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
