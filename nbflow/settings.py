"""nbflow settings: the ONLY module that reads ``NBFLOW_*`` environment variables.

Everything else asks :func:`get_settings`.  Settings are read once per process and cached;
:func:`reload_settings` re-reads them (tests, or a kernel whose environment changed).

======================  ==============================================================
variable                meaning (default)
======================  ==============================================================
NBFLOW_HOME             where the embedded store and results live (``~/.nbflow``)
NBFLOW_DATABASE_URL     SQLAlchemy URL of the store (``sqlite:///$NBFLOW_HOME/nbflow.db``)
NBFLOW_API_URL          the server's API base URL; when set, clients talk HTTP to it
NBFLOW_API_TOKEN        credential for the server (a per-run token inside runs)
NBFLOW_API_RETRY_SECONDS  how long the HTTP client keeps retrying while the server is
                        unreachable or answers 502/503/504 (``600`` in a run's own
                        process, ``30`` elsewhere: the CLI, a kernel; 0: never retry)
NBFLOW_RESULTS_URL      where task results and caches are persisted (``$NBFLOW_HOME/results``;
                        any fsspec URL)
NBFLOW_LOGGING_LEVEL    level of records shipped to the store (``INFO``)
NBFLOW_BATCH_RESULTS_MAX_BYTES  a batch run persists each completed ``%%task`` cell's
                        outputs up to this size, for a repair (``67108864``; 0: never)
NBFLOW__FLOW_RUN_ID     set by runners: the flow run this process executes
NBFLOW__KERNEL_ID       set by a Jupyter server with nbflow in kernels it starts: the
                        kernel's id there (its interactive runs record ``kernel:<id>``)
======================  ==============================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from uuid import UUID

__all__ = ["Settings", "get_settings", "reload_settings", "runner_environment"]


@dataclass(frozen=True)
class Settings:
    """A snapshot of nbflow's configuration."""

    home: Path
    database_url: str
    api_url: str | None
    api_token: str | None
    results_url: str
    logging_level: str
    flow_run_id: UUID | None
    api_retry_seconds: float = 600.0
    #: The id of this kernel in the Jupyter server that started it (None: not such a kernel).
    kernel_id: str | None = None
    #: Largest pickled outputs of one ``%%task`` cell a batch run persists (0: none).
    batch_results_max_bytes: int = 64 * 1024 * 1024

    @property
    def uses_server(self) -> bool:
        """Whether clients should talk to a server instead of the embedded store."""
        return bool(self.api_url)


def _read(environ: os._Environ[str] | dict[str, str]) -> Settings:
    home = Path(environ.get("NBFLOW_HOME") or Path.home() / ".nbflow").expanduser()
    run_id = environ.get("NBFLOW__FLOW_RUN_ID")
    try:
        flow_run_id = UUID(run_id) if run_id else None
    except ValueError as exc:
        raise ValueError(
            f"NBFLOW__FLOW_RUN_ID={run_id!r} is not a UUID; unset it or give a flow run id"
        ) from exc
    # A run's own process waits out a server restart; a person at a prompt should not.
    retry_text = environ.get("NBFLOW_API_RETRY_SECONDS") or ("600" if flow_run_id else "30")
    try:
        api_retry_seconds = float(retry_text)
    except ValueError:
        api_retry_seconds = -1.0
    if not api_retry_seconds >= 0:  # also refuses NaN
        raise ValueError(
            f"NBFLOW_API_RETRY_SECONDS={retry_text!r} is not a number of seconds >= 0; "
            "give e.g. 600 (0: never retry)"
        )
    cap_text = environ.get("NBFLOW_BATCH_RESULTS_MAX_BYTES") or str(64 * 1024 * 1024)
    if not cap_text.strip().isdigit():
        raise ValueError(
            f"NBFLOW_BATCH_RESULTS_MAX_BYTES={cap_text!r} is not a whole number of bytes >= 0; "
            "give e.g. 67108864 (0: batch runs persist no cell outputs)"
        )
    return Settings(
        home=home,
        database_url=environ.get("NBFLOW_DATABASE_URL") or f"sqlite:///{home / 'nbflow.db'}",
        api_url=(environ.get("NBFLOW_API_URL") or "").rstrip("/") or None,
        api_token=environ.get("NBFLOW_API_TOKEN") or None,
        results_url=environ.get("NBFLOW_RESULTS_URL") or str(home / "results"),
        logging_level=(environ.get("NBFLOW_LOGGING_LEVEL") or "INFO").upper(),
        flow_run_id=flow_run_id,
        api_retry_seconds=api_retry_seconds,
        kernel_id=environ.get("NBFLOW__KERNEL_ID") or None,
        batch_results_max_bytes=int(cap_text),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process's settings, read from the environment on first use."""
    return _read(os.environ)


def reload_settings() -> Settings:
    """Forget the cached settings and read the environment again."""
    get_settings.cache_clear()
    return get_settings()


def runner_environment(
    flow_run_id: UUID,
    *,
    api_url: str | None,
    api_token: str | None,
    settings: Settings | None = None,
) -> dict[str, str]:
    """Return the variables a runner gives a run's process (the inverse of :func:`_read`)."""
    s = settings or get_settings()
    env = {"NBFLOW__FLOW_RUN_ID": str(flow_run_id), "NBFLOW_RESULTS_URL": s.results_url}
    if api_url:
        env["NBFLOW_API_URL"] = api_url
        if api_token:
            env["NBFLOW_API_TOKEN"] = api_token
    else:
        env["NBFLOW_HOME"] = str(s.home)
        env["NBFLOW_DATABASE_URL"] = s.database_url
    return env
