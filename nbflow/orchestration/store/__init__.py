"""The nbflow store: SQLAlchemy Core tables, Alembic migrations, SQLite/PostgreSQL engines.

Contracts:

* Only this package and ``nbflow.client.embedded`` import SQLAlchemy; ``import nbflow``
  never does.
* :class:`Store` is the persistence of :class:`nbflow.orchestration.lifecycle.FlowRunLifecycle`,
  the only caller of its flow-run writes (create, states, cancel, close-out); each call is
  one transaction, and every flow-run state change runs the orchestration policy under the
  run's row lock.
* Opening a store migrates its database to the newest revision (safe under concurrency).
"""

from __future__ import annotations

from nbflow.orchestration.store.database import create_engine, migrate, normalize_url
from nbflow.orchestration.store.store import Store

__all__ = ["Store", "create_engine", "migrate", "normalize_url"]
