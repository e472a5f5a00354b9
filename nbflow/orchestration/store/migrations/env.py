"""Alembic environment for the nbflow store.

nbflow runs migrations programmatically (:func:`nbflow.orchestration.store.database.migrate`)
on a connection it has already opened and locked; that connection arrives in
``config.attributes["connection"]``.  Running ``alembic`` from the command line needs
``-x url=...`` (see docs/store.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from nbflow.orchestration.store.tables import metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from nbflow.orchestration.store.database import create_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("give the database URL: alembic -x url=sqlite:///path/nbflow.db ...")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
