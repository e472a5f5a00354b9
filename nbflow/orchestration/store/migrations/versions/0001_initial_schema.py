"""Create the initial nbflow store schema.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22 19:56:17.055613
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flows",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("parameters_schema", sa.JSON(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flows")),
        sa.UniqueConstraint("name", name=op.f("uq_flows_name")),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("flow_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("runner", sa.String(length=200), nullable=False),
        sa.Column("job_variables", sa.JSON(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("concurrency_limit", sa.Integer(), nullable=True),
        sa.Column("notebook_path", sa.Text(), nullable=True),
        sa.Column("notebook", sa.JSON(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_id"], ["flows.id"], name=op.f("fk_deployments_flow_id_flows"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        sa.UniqueConstraint("flow_id", "name", name=op.f("uq_deployments_flow_id_name")),
    )
    op.create_table(
        "flow_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("flow_id", sa.Uuid(), nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("state_id", sa.Uuid(), nullable=True),
        sa.Column("state_type", sa.String(length=20), nullable=True),
        sa.Column("state_name", sa.String(length=100), nullable=True),
        sa.Column("state_timestamp", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state_json", sa.Text(), nullable=True),
        sa.Column("run_count", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("total_run_time", sa.Float(), nullable=False),
        sa.Column("expected_start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("runner", sa.String(length=200), nullable=True),
        sa.Column("job_variables", sa.JSON(), nullable=False),
        sa.Column("infrastructure_id", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=500), nullable=True),
        sa.Column("notebook_path", sa.Text(), nullable=True),
        sa.Column("output_path", sa.Text(), nullable=True),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_flow_runs_deployment_id_deployments"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["flow_id"], ["flows.id"], name=op.f("fk_flow_runs_flow_id_flows"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_runs")),
        sa.UniqueConstraint(
            "deployment_id",
            "idempotency_key",
            name=op.f("uq_flow_runs_deployment_id_idempotency_key"),
        ),
    )
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_flow_runs_created"), ["created"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_flow_runs_deployment_id"), ["deployment_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_flow_runs_expected_start_time"), ["expected_start_time"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_flow_runs_flow_id"), ["flow_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_flow_runs_state_type_expected_start_time"),
            ["state_type", "expected_start_time"],
            unique=False,
        )

    op.create_table(
        "schedules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=True),
        sa.Column("interval_seconds", sa.Float(), nullable=True),
        sa.Column("timezone", sa.String(length=100), nullable=False),
        sa.Column("anchor_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_schedules_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_schedules_deployment_id"), ["deployment_id"], unique=False
        )

    op.create_table(
        "artifacts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("flow_run_id", sa.Uuid(), nullable=True),
        sa.Column("task_run_id", sa.Uuid(), nullable=True),
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_run_id"],
            ["flow_runs.id"],
            name=op.f("fk_artifacts_flow_run_id_flow_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
    )
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_artifacts_flow_run_id_created"), ["flow_run_id", "created"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_artifacts_key"), ["key"], unique=False)

    op.create_table(
        "flow_run_states",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("state_id", sa.Uuid(), nullable=False),
        sa.Column("flow_run_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state_json", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_run_id"],
            ["flow_runs.id"],
            name=op.f("fk_flow_run_states_flow_run_id_flow_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_flow_run_states")),
        sa.UniqueConstraint("state_id", name=op.f("uq_flow_run_states_state_id")),
    )
    with op.batch_alter_table("flow_run_states", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_flow_run_states_flow_run_id_seq"), ["flow_run_id", "seq"], unique=False
        )

    op.create_table(
        "logs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("flow_run_id", sa.Uuid(), nullable=True),
        sa.Column("task_run_id", sa.Uuid(), nullable=True),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("logger", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_run_id"],
            ["flow_runs.id"],
            name=op.f("fk_logs_flow_run_id_flow_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_logs")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("logs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_logs_flow_run_id_id"), ["flow_run_id", "id"], unique=False
        )

    op.create_table(
        "task_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("flow_run_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("task_key", sa.String(length=500), nullable=False),
        sa.Column("dynamic_key", sa.Integer(), nullable=False),
        sa.Column("state_type", sa.String(length=20), nullable=True),
        sa.Column("state_name", sa.String(length=100), nullable=True),
        sa.Column("state_json", sa.Text(), nullable=True),
        sa.Column("run_count", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("total_run_time", sa.Float(), nullable=False),
        sa.Column("cache_key", sa.String(length=500), nullable=True),
        sa.Column("cache_expiration", sa.DateTime(timezone=True), nullable=True),
        sa.Column("upstream", sa.JSON(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_run_id"],
            ["flow_runs.id"],
            name=op.f("fk_task_runs_flow_run_id_flow_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_runs")),
    )
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_task_runs_cache_key"), ["cache_key"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_task_runs_flow_run_id_created"), ["flow_run_id", "created"], unique=False
        )

    op.create_table(
        "task_run_states",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("state_id", sa.Uuid(), nullable=False),
        sa.Column("task_run_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state_json", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_run_id"],
            ["task_runs.id"],
            name=op.f("fk_task_run_states_task_run_id_task_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_task_run_states")),
        sa.UniqueConstraint("state_id", name=op.f("uq_task_run_states_state_id")),
    )
    with op.batch_alter_table("task_run_states", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_task_run_states_task_run_id_seq"), ["task_run_id", "seq"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("task_run_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_run_states_task_run_id_seq"))

    op.drop_table("task_run_states")
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_runs_flow_run_id_created"))
        batch_op.drop_index(batch_op.f("ix_task_runs_cache_key"))

    op.drop_table("task_runs")
    with op.batch_alter_table("logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_logs_flow_run_id_id"))

    op.drop_table("logs")
    with op.batch_alter_table("flow_run_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flow_run_states_flow_run_id_seq"))

    op.drop_table("flow_run_states")
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_artifacts_key"))
        batch_op.drop_index(batch_op.f("ix_artifacts_flow_run_id_created"))

    op.drop_table("artifacts")
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_schedules_deployment_id"))

    op.drop_table("schedules")
    with op.batch_alter_table("flow_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flow_runs_state_type_expected_start_time"))
        batch_op.drop_index(batch_op.f("ix_flow_runs_flow_id"))
        batch_op.drop_index(batch_op.f("ix_flow_runs_expected_start_time"))
        batch_op.drop_index(batch_op.f("ix_flow_runs_deployment_id"))
        batch_op.drop_index(batch_op.f("ix_flow_runs_created"))

    op.drop_table("flow_runs")
    op.drop_table("deployments")
    op.drop_table("flows")
