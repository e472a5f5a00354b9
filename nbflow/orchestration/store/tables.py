"""The store's schema as SQLAlchemy Core tables (one ``MetaData``, portable types).

Portable means the same definitions work on SQLite and PostgreSQL: ``sa.Uuid`` (native
UUID on PostgreSQL, 32 hex characters on SQLite), ``sa.JSON``, and :class:`UTCDateTime`,
which stores aware datetimes and always returns aware UTC ones, also on SQLite where the
column itself has no time zone.  States are stored twice: their orchestration-relevant
columns (type, name, time) for filtering and the full state as JSON text for reading back.

The Alembic migrations in ``migrations/versions`` create exactly these tables; a test
compares the migrated database with this module.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "UTCDateTime",
    "artifacts",
    "automations",
    "concurrency_limits",
    "deployment_versions",
    "deployments",
    "flow_run_states",
    "flow_runs",
    "flows",
    "logs",
    "metadata",
    "notification_deliveries",
    "schedules",
    "task_run_states",
    "task_runs",
]


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware datetime column that reads back as aware UTC on every database."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return _to_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """Format for SQLite directly (naive UTC text, so text order is time order)."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is not UTC:
                value = _to_utc(value)
            # "YYYY-MM-DD HH:MM:SS.ffffff", SQLAlchemy's SQLite format, minus the offset.
            return value.isoformat(" ", "microseconds")[:26]

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        """Parse SQLite's text with the C ``fromisoformat`` and mark it UTC."""
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def process(value: str | None) -> datetime | None:
            if value is None:
                return None
            return datetime.fromisoformat(value).replace(tzinfo=UTC)

        return process


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        raise ValueError(
            f"naive datetime {value.isoformat()} given to the store; "
            "nbflow stores aware datetimes only (use nbflow.states.now())"
        )
    return value.astimezone(UTC)


def _id_pk() -> sa.Column[Any]:
    return sa.Column("id", sa.Uuid(), primary_key=True)


#: Autoincrement integer keys: BIGSERIAL on PostgreSQL, INTEGER PRIMARY KEY on SQLite.
_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

flows = sa.Table(
    "flows",
    metadata,
    _id_pk(),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("description", sa.Text()),
    sa.Column("parameters_schema", sa.JSON(), nullable=False),
    sa.Column("source", sa.Text()),
    sa.Column("tags", sa.JSON(), nullable=False),
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Column("updated", UTCDateTime(), nullable=False),
)

deployments = sa.Table(
    "deployments",
    metadata,
    _id_pk(),
    sa.Column("flow_id", sa.Uuid(), sa.ForeignKey("flows.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("runner", sa.String(200), nullable=False),
    sa.Column("job_variables", sa.JSON(), nullable=False),
    sa.Column("parameters", sa.JSON(), nullable=False),
    sa.Column("paused", sa.Boolean(), nullable=False),
    sa.Column("concurrency_limit", sa.Integer()),
    sa.Column("notebook_path", sa.Text()),
    sa.Column("notebook", sa.JSON()),
    sa.Column("description", sa.Text()),
    sa.Column("tags", sa.JSON(), nullable=False),
    #: ``snapshot`` (run the stored notebook) or ``file`` (the file at run time).
    sa.Column("run_mode", sa.String(20), nullable=False, server_default="snapshot"),
    sa.Column("kernel_name", sa.String(200)),
    #: The number of its latest row in ``deployment_versions`` (the optimistic lock).
    sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Column("updated", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("flow_id", "name"),
)

#: Every version of a deployment's definition: who, when, what changed, the definition
#: as JSON and its notebook snapshot's hash (the snapshot itself is stored once per hash).
deployment_versions = sa.Table(
    "deployment_versions",
    metadata,
    _id_pk(),
    sa.Column(
        "deployment_id",
        sa.Uuid(),
        sa.ForeignKey("deployments.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Column("author", sa.String(200), nullable=False),
    sa.Column("summary", sa.Text(), nullable=False),
    sa.Column("definition", sa.JSON(), nullable=False),
    sa.Column("notebook_sha256", sa.String(64)),
    #: The snapshot, on the first version with this hash only (None on the others).
    sa.Column("notebook", sa.JSON()),
    sa.UniqueConstraint("deployment_id", "version"),
)

schedules = sa.Table(
    "schedules",
    metadata,
    _id_pk(),
    sa.Column(
        "deployment_id",
        sa.Uuid(),
        sa.ForeignKey("deployments.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    #: Order of the schedule in the deployment's list.
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("cron", sa.String(200)),
    sa.Column("interval_seconds", sa.Float()),
    sa.Column("timezone", sa.String(100), nullable=False),
    sa.Column("anchor_date", UTCDateTime()),
    sa.Column("active", sa.Boolean(), nullable=False),
)

flow_runs = sa.Table(
    "flow_runs",
    metadata,
    _id_pk(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column(
        "flow_id",
        sa.Uuid(),
        sa.ForeignKey("flows.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column(
        "deployment_id",
        sa.Uuid(),
        sa.ForeignKey("deployments.id", ondelete="SET NULL"),
    ),
    sa.Column("parameters", sa.JSON(), nullable=False),
    # The current state: columns to filter on, the whole state as JSON to read back.
    sa.Column("state_id", sa.Uuid()),
    sa.Column("state_type", sa.String(20)),
    sa.Column("state_name", sa.String(100)),
    sa.Column("state_timestamp", UTCDateTime()),
    sa.Column("state_json", sa.Text()),
    sa.Column("run_count", sa.Integer(), nullable=False),
    sa.Column("start_time", UTCDateTime()),
    sa.Column("end_time", UTCDateTime()),
    sa.Column("total_run_time", sa.Float(), nullable=False),
    sa.Column("expected_start_time", UTCDateTime(), index=True),
    sa.Column("tags", sa.JSON(), nullable=False),
    sa.Column("runner", sa.String(200)),
    sa.Column("job_variables", sa.JSON(), nullable=False),
    sa.Column("infrastructure_id", sa.Text()),
    sa.Column("idempotency_key", sa.String(500)),
    sa.Column("notebook_path", sa.Text()),
    sa.Column("output_path", sa.Text()),
    sa.Column("mode", sa.String(20), nullable=False),
    sa.Column("heartbeat", UTCDateTime()),
    #: The run this one retries (a user's retry or a repair is a new, linked run).
    sa.Column("retry_of", sa.Uuid(), index=True),
    #: The flow run (and its task run) that started this one as a child (run_notebook).
    sa.Column("parent_flow_run_id", sa.Uuid()),
    sa.Column("parent_task_run_id", sa.Uuid()),
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Column("updated", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("deployment_id", "idempotency_key"),
    sa.Index(None, "state_type", "expected_start_time"),
    # The runs list's indexes, each in its order (migration 0005, store/run_list.py).
    sa.Index("ix_flow_runs_list", "created", "id", "state_type", "expected_start_time"),
    sa.Index("ix_flow_runs_list_by_state", "state_type", "created", "id"),
    sa.Index(
        "ix_flow_runs_list_by_flow", "flow_id", "created", "id", "state_type", "expected_start_time"
    ),
    sa.Index(
        "ix_flow_runs_list_by_deployment",
        "deployment_id",
        "created",
        "id",
        "state_type",
        "expected_start_time",
    ),
    sa.Index("ix_flow_runs_list_by_parent", "parent_flow_run_id", "created", "id"),
    sa.Index("ix_flow_runs_by_updated", "updated", "id"),
)

flow_run_states = sa.Table(
    "flow_run_states",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    #: The state id is the transition id: unique, so a replayed transition is never stored twice.
    sa.Column("state_id", sa.Uuid(), nullable=False, unique=True),
    sa.Column(
        "flow_run_id",
        sa.Uuid(),
        sa.ForeignKey("flow_runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("type", sa.String(20), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("timestamp", UTCDateTime(), nullable=False),
    sa.Column("state_json", sa.Text(), nullable=False),
    sa.Index(None, "flow_run_id", "seq"),
)

task_runs = sa.Table(
    "task_runs",
    metadata,
    _id_pk(),
    sa.Column("flow_run_id", sa.Uuid(), sa.ForeignKey("flow_runs.id", ondelete="CASCADE")),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("task_key", sa.String(500), nullable=False),
    sa.Column("dynamic_key", sa.Integer(), nullable=False),
    sa.Column("state_type", sa.String(20)),
    sa.Column("state_name", sa.String(100)),
    sa.Column("state_json", sa.Text()),
    sa.Column("run_count", sa.Integer(), nullable=False),
    sa.Column("start_time", UTCDateTime()),
    sa.Column("end_time", UTCDateTime()),
    sa.Column("total_run_time", sa.Float(), nullable=False),
    sa.Column("cache_key", sa.String(500), index=True),
    sa.Column("cache_expiration", UTCDateTime()),
    sa.Column("upstream", sa.JSON(), nullable=False),
    sa.Column("inputs", sa.JSON(), nullable=False),
    sa.Column("outputs", sa.JSON(), nullable=False),
    sa.Column("tags", sa.JSON(), nullable=False),
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Column("updated", UTCDateTime(), nullable=False),
    sa.Index(None, "flow_run_id", "created"),
)

task_run_states = sa.Table(
    "task_run_states",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    sa.Column("state_id", sa.Uuid(), nullable=False, unique=True),
    sa.Column(
        "task_run_id",
        sa.Uuid(),
        sa.ForeignKey("task_runs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("type", sa.String(20), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("timestamp", UTCDateTime(), nullable=False),
    sa.Column("state_json", sa.Text(), nullable=False),
    sa.Index(None, "task_run_id", "seq"),
)

logs = sa.Table(
    "logs",
    metadata,
    #: The read cursor: clients page with ``id > cursor``.
    sa.Column("id", _Seq, primary_key=True, autoincrement=True),
    sa.Column("flow_run_id", sa.Uuid(), sa.ForeignKey("flow_runs.id", ondelete="CASCADE")),
    # No foreign key: logs and task runs are shipped in separate batches, in any order.
    sa.Column("task_run_id", sa.Uuid()),
    sa.Column("level", sa.Integer(), nullable=False),
    sa.Column("logger", sa.String(200), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("timestamp", UTCDateTime(), nullable=False),
    sa.Index(None, "flow_run_id", "id"),
    sqlite_autoincrement=True,
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    _id_pk(),
    sa.Column("flow_run_id", sa.Uuid(), sa.ForeignKey("flow_runs.id", ondelete="CASCADE")),
    sa.Column("task_run_id", sa.Uuid()),
    sa.Column("key", sa.String(500), nullable=False, index=True),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("uri", sa.Text()),
    sa.Column("data", sa.JSON()),
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Index(None, "flow_run_id", "created"),
)

#: Concurrency limits by key: ``flow:<flow name>`` or ``tag:<tag>`` (deployments carry their own).
concurrency_limits = sa.Table(
    "concurrency_limits",
    metadata,
    _id_pk(),
    sa.Column("key", sa.String(300), nullable=False, unique=True),
    sa.Column("limit", sa.Integer(), nullable=False),
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Column("updated", UTCDateTime(), nullable=False),
)

#: Notification rules: which runs (deployment, flow, tag or any), which states or how long
#: running, and where to (a webhook or email addresses).  Read by the server's notifier.
automations = sa.Table(
    "automations",
    metadata,
    _id_pk(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("on_states", sa.JSON(), nullable=False),
    sa.Column("match_kind", sa.String(20), nullable=False),
    sa.Column("match_value", sa.String(400)),
    sa.Column("longer_than_seconds", sa.Float()),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("webhook_url", sa.Text()),
    sa.Column("webhook_slack", sa.Boolean(), nullable=False),
    sa.Column("email_to", sa.JSON(), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("created", UTCDateTime(), nullable=False),
)

#: One notification of one rule about one run's event, recorded before it is sent (the
#: unique key makes it once per rule, run and event) with the outcome of every attempt.
notification_deliveries = sa.Table(
    "notification_deliveries",
    metadata,
    _id_pk(),
    sa.Column(
        "automation_id",
        sa.Uuid(),
        sa.ForeignKey("automations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column(
        "flow_run_id",
        sa.Uuid(),
        sa.ForeignKey("flow_runs.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    #: The state name entered (``Failed``, ``Late``) or ``running longer than N s``.
    sa.Column("event", sa.String(200), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),
    sa.Column("last_error", sa.Text()),
    #: Every attempt: ``{"attempt", "at", "ok", "error"}``.
    sa.Column("history", sa.JSON(), nullable=False),
    #: What is sent (rendered once, when recorded): subject, text, JSON payload.
    sa.Column("message", sa.JSON(), nullable=False),
    sa.Column("created", UTCDateTime(), nullable=False),
    sa.Column("updated", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("automation_id", "flow_run_id", "event"),
)
