"""Helpers for the tests of the server's dispatcher and monitors (services running).

- :func:`database_url`: a fresh database on SQLite or PostgreSQL (a schema of its own,
  from ``NBFLOW_TEST_POSTGRES_URL``; skipped locally without it, a failure when ``CI``
  is set);
- :class:`RecordingRunner`: a runner that starts nothing and records what it was given,
  for the dispatcher's own tests (the end-to-end tests use the subprocess runner);
- :func:`eventually`: poll a condition with a generous deadline (no timing assertions);
- :func:`services_config`: the server configuration with services on and short intervals.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from nbflow.runners import JobVariables, Runner
from nbflow.runners.subprocess import SubprocessJobVariables
from nbflow.schemas import FlowRun
from tests.databases import BACKENDS, database_url

__all__ = [
    "BACKENDS",
    "RecordingRunner",
    "database_url",
    "eventually",
    "services_config",
]


def services_config(db_url: str, tmp_path: Path, **nbflow: Any) -> dict[str, Any]:
    """Return a ``jp_server_config`` with nbflow's services on and short intervals."""
    settings: dict[str, Any] = {
        "db_url": db_url,
        "secret_file": str(tmp_path / "secret"),
        "services_enabled": True,
        "scheduler_interval": 0.5,
        "dispatch_interval": 0.2,
        "monitor_interval": 0.2,
        "scheduled_runs_ahead": 1,
        # No executor started ahead (the default is 1): most tests record submissions or
        # never run a notebook, and a kernel per test server costs the suite CPU.
        "warm_executors": 0,
    }
    settings.update(nbflow)
    return {
        "ServerApp": {"jpserver_extensions": {"nbflow_server": True}},
        "NbflowApp": settings,
    }


class RecordingRunner(Runner):
    """A runner that starts no process: it records each submission and waits until killed."""

    name: ClassVar[str] = "recording"
    job_variables_model: ClassVar[type[JobVariables]] = SubprocessJobVariables
    #: Every submission of every instance: (run, job configuration, environment).
    submissions: ClassVar[list[tuple[FlowRun, dict[str, Any], dict[str, str]]]] = []
    #: Names of runs whose submission raises (to test failed submissions).
    fail_names: ClassVar[set[str]] = set()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._done: dict[str, threading.Event] = {}

    @classmethod
    def reset(cls) -> None:
        """Forget every submission."""
        with cls._lock:
            cls.submissions.clear()
            cls.fail_names.clear()

    def submit(self, flow_run: FlowRun, job_variables: Mapping[str, Any] | None = None) -> str:
        if flow_run.name in self.fail_names:
            raise RuntimeError("no capacity left on the test cluster")
        config = self.job_configuration(flow_run, job_variables).model_dump()
        with self._lock:
            self.submissions.append((flow_run, config, self.run_environment(flow_run)))
            infrastructure_id = f"recording-{len(self.submissions)}"
            self._done[infrastructure_id] = threading.Event()
        return infrastructure_id

    def kill(self, infrastructure_id: str, grace_seconds: float = 30.0) -> None:
        self._done.setdefault(infrastructure_id, threading.Event()).set()

    def wait(self, infrastructure_id: str, timeout: float | None = None) -> int | None:
        done = self._done.setdefault(infrastructure_id, threading.Event())
        return 0 if done.wait(timeout) else None


async def eventually(
    check: Callable[[], Awaitable[Any]], *, what: str, deadline: float = 120.0
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    last: Any = None
    while loop.time() < end:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    pytest.fail(f"gave up waiting for {what} after {deadline:g} s (last: {last!r})")


async def kernel_settled(jp_serverapp: Any, kernel_id: str) -> None:
    """Wait until the server's kernel is not (re)starting."""

    async def settled() -> bool:
        if kernel_id not in jp_serverapp.kernel_manager:
            return True
        return bool(jp_serverapp.kernel_manager.get_kernel(kernel_id).ready.done())

    await eventually(settled, what=f"kernel {kernel_id} to finish (re)starting")
