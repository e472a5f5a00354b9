"""Version deployments: run mode, kernel, version number and every version of the definition.

Existing deployments get version 1 (author ``migration``) holding their definition and
notebook snapshot as they are, so the first edit after the upgrade is version 2.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 14:30:00
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# A frozen view of the tables as this revision leaves them (the backfill must not follow
# later changes of tables.py).
_deployments = sa.table(
    "deployments",
    sa.column("id", sa.Uuid()),
    sa.column("name", sa.String()),
    sa.column("runner", sa.String()),
    sa.column("job_variables", sa.JSON()),
    sa.column("parameters", sa.JSON()),
    sa.column("paused", sa.Boolean()),
    sa.column("concurrency_limit", sa.Integer()),
    sa.column("notebook_path", sa.Text()),
    sa.column("notebook", sa.JSON()),
    sa.column("description", sa.Text()),
    sa.column("tags", sa.JSON()),
    sa.column("version", sa.Integer()),
)
_schedules = sa.table(
    "schedules",
    sa.column("id", sa.Uuid()),
    sa.column("deployment_id", sa.Uuid()),
    sa.column("position", sa.Integer()),
    sa.column("cron", sa.String()),
    sa.column("interval_seconds", sa.Float()),
    sa.column("timezone", sa.String()),
    sa.column("anchor_date", sa.DateTime(timezone=True)),
    sa.column("active", sa.Boolean()),
)
_versions = sa.table(
    "deployment_versions",
    sa.column("id", sa.Uuid()),
    sa.column("deployment_id", sa.Uuid()),
    sa.column("version", sa.Integer()),
    sa.column("created", sa.DateTime(timezone=True)),
    sa.column("author", sa.String()),
    sa.column("summary", sa.Text()),
    sa.column("definition", sa.JSON()),
    sa.column("notebook_sha256", sa.String()),
    sa.column("notebook", sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(
            sa.Column("run_mode", sa.String(length=20), nullable=False, server_default="snapshot")
        )
        batch.add_column(sa.Column("kernel_name", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "deployment_versions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("notebook_sha256", sa.String(length=64), nullable=True),
        sa.Column("notebook", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_versions_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_versions")),
        sa.UniqueConstraint(
            "deployment_id", "version", name=op.f("uq_deployment_versions_deployment_id_version")
        ),
    )
    _backfill()


def _backfill() -> None:
    """Record each existing deployment as its version 1."""
    conn = op.get_bind()
    created = datetime.now(UTC)
    for row in conn.execute(sa.select(_deployments)).all():
        schedules = conn.execute(
            sa.select(_schedules)
            .where(_schedules.c.deployment_id == row.id)
            .order_by(_schedules.c.position)
        ).all()
        definition = {
            "name": row.name,
            "runner": row.runner,
            "job_variables": row.job_variables or {},
            "parameters": row.parameters or {},
            "schedules": [_schedule(s) for s in schedules],
            "paused": bool(row.paused),
            "concurrency_limit": row.concurrency_limit,
            "notebook_path": row.notebook_path,
            "description": row.description,
            "tags": row.tags or [],
            "run_mode": "snapshot",
            "kernel_name": None,
        }
        digest = None
        if row.notebook is not None:
            canonical = json.dumps(row.notebook, sort_keys=True, separators=(",", ":"))
            digest = hashlib.sha256(canonical.encode()).hexdigest()
        conn.execute(
            sa.insert(_versions).values(
                id=uuid.uuid4(),
                deployment_id=row.id,
                version=1,
                created=created,
                author="migration",
                summary="recorded when versions were introduced",
                definition=definition,
                notebook_sha256=digest,
                notebook=row.notebook,
            )
        )
        conn.execute(sa.update(_deployments).where(_deployments.c.id == row.id).values(version=1))


def _schedule(row: Any) -> dict[str, Any]:
    anchor = row.anchor_date
    if isinstance(anchor, str):
        anchor = datetime.fromisoformat(anchor)
    if isinstance(anchor, datetime):
        anchor = (anchor if anchor.tzinfo else anchor.replace(tzinfo=UTC)).isoformat()
    return {
        "id": str(row.id),
        "cron": row.cron,
        "interval_seconds": row.interval_seconds,
        "timezone": row.timezone,
        "anchor_date": anchor,
        "active": bool(row.active),
    }


def downgrade() -> None:
    op.drop_table("deployment_versions")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not a batch: a batch recreates the
    # table on SQLite, and dropping the old one would cascade to the schedules.
    for column in ("version", "kernel_name", "run_mode"):
        op.drop_column("deployments", column)
