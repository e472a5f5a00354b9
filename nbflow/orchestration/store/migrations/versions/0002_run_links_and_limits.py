"""Link runs (retries, parent/child) and store concurrency limits by flow or tag.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 09:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flow_runs") as batch:
        batch.add_column(sa.Column("retry_of", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("parent_flow_run_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("parent_task_run_id", sa.Uuid(), nullable=True))
        batch.create_index(batch.f("ix_flow_runs_retry_of"), ["retry_of"])
        batch.create_index(batch.f("ix_flow_runs_parent_flow_run_id"), ["parent_flow_run_id"])
    op.create_table(
        "concurrency_limits",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("limit", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_concurrency_limits")),
        sa.UniqueConstraint("key", name=op.f("uq_concurrency_limits_key")),
    )


def downgrade() -> None:
    op.drop_table("concurrency_limits")
    with op.batch_alter_table("flow_runs") as batch:
        batch.drop_index(batch.f("ix_flow_runs_parent_flow_run_id"))
        batch.drop_index(batch.f("ix_flow_runs_retry_of"))
        batch.drop_column("parent_task_run_id")
        batch.drop_column("parent_flow_run_id")
        batch.drop_column("retry_of")
