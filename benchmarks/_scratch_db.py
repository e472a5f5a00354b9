"""A scratch PostgreSQL schema for a benchmark run (shared by api_latency.py and dispatch.py).

Benchmarks run as scripts (``python benchmarks/NAME.py``), so this folder is on
``sys.path`` and they import this module by its plain name.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["scratch_postgres"]


@contextmanager
def scratch_postgres(url: str, prefix: str = "bench") -> Iterator[str]:
    """Create a scratch schema on the database at ``url``; yield a URL using it; drop it."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    base = make_url(url).set(drivername="postgresql+psycopg")
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        scoped = base.update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
