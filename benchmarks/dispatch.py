"""Dispatch throughput: due runs claimed and submitted per second by the server's dispatcher.

A no-op runner (:class:`NoopRunner`, a ``Runner`` subclass given through
``NbflowApp.runner_classes``, not an entry point) makes submission free, so what is
measured is the dispatcher itself: reading due runs and the active ones, claiming each
through the orchestration gate (Pending), proposing Submitting and recording the
infrastructure id, for ``--runs`` runs that all became due at the same moment.

- **service**: the :class:`DispatcherService` in this process on an asyncio loop (its
  claim pass plus the submission thread pool), on the store directly;
- **server**: a real ``nbflow server`` subprocess with its services on; the runs are
  written to its database with one future ``scheduled_time`` and the clock starts at that
  time; it stops when the API reports every run Submitting (polled every 50 ms).

Both on SQLite and, when ``NBFLOW_TEST_POSTGRES_URL`` is set, on PostgreSQL (a scratch
schema created and dropped here).  Target (issue 5): >= 50 runs/s.

    .venv/bin/python benchmarks/dispatch.py [--runs 1000] [--db sqlite|postgres|all]

Results: printed and written to ``benchmarks/results/dispatch.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from _scratch_db import scratch_postgres

from nbflow.runners import Runner
from nbflow.schemas import FlowRun

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
TARGET = 50.0
TOKEN = "bench-dispatch-token"


class NoopRunner(Runner):
    """A runner that starts nothing: submission returns an id at once."""

    name: ClassVar[str] = "noop"
    submitted: ClassVar[int] = 0
    _lock: ClassVar[threading.Lock] = threading.Lock()
    all_done: ClassVar[threading.Event] = threading.Event()
    expected: ClassVar[int] = 0

    def submit(self, flow_run: FlowRun, job_variables: Mapping[str, Any] | None = None) -> str:
        self.job_configuration(flow_run, job_variables)
        self.run_environment(flow_run)
        with self._lock:
            NoopRunner.submitted += 1
            if NoopRunner.submitted >= NoopRunner.expected:
                NoopRunner.all_done.set()
        return f"noop-{flow_run.id}"

    def kill(self, infrastructure_id: str, grace_seconds: float = 30.0) -> None:
        """Nothing to stop."""

    def wait(self, infrastructure_id: str, timeout: float | None = None) -> int | None:
        """Never finishes (the runs stay Submitting)."""
        time.sleep(timeout or 0)
        return None


# -- in-process service ----------------------------------------------------------------


def bench_service(db_url: str, runs: int) -> dict[str, Any]:
    """Time the DispatcherService on ``runs`` due runs of a fresh store."""
    from nbflow.client.embedded import EmbeddedClient
    from nbflow.schemas import Flow, FlowRunCreate, FlowRunFilter
    from nbflow.states import Scheduled
    from nbflow_server.services.dispatcher import Dispatcher, DispatcherService, RunnerPool

    client = EmbeddedClient.from_url(db_url)
    flow = client.create_flow(Flow(name="dispatch-bench"))
    due = datetime.now(UTC) - timedelta(seconds=1)
    for _ in range(runs):
        client.create_flow_run(
            FlowRunCreate(
                flow_id=flow.id, mode="batch", runner="noop", state=Scheduled(scheduled_time=due)
            )
        )
    NoopRunner.submitted, NoopRunner.expected = 0, runs
    NoopRunner.all_done.clear()
    pool = RunnerPool(
        lambda name: NoopRunner(
            client=client, api_url="http://127.0.0.1:1/nbflow/api/v1", token_factory=lambda r: "t"
        )
    )
    service = DispatcherService(
        Dispatcher(client, pool, runner_names={"noop"}, claimer="the benchmark"), interval=0.05
    )

    async def run() -> float:
        start = time.perf_counter()
        await service.start()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, NoopRunner.all_done.wait, 600)
        elapsed = time.perf_counter() - start
        await service.stop()
        return elapsed

    elapsed = asyncio.run(run())
    submitting = client.count_flow_runs(FlowRunFilter(state_names=["Submitting"]))
    client.close()
    return {
        "runs": runs,
        "seconds": round(elapsed, 3),
        "runs_per_s": round(runs / elapsed, 1),
        "submitting": submitting,
    }


# -- a real server -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nbflow_server(base: Path, db_url: str) -> Iterator[str]:
    """Start ``nbflow server`` with services and the no-op runner; yield its API URL."""
    import httpx

    port = _free_port()
    (base / "root").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW")}
    env.update(
        NBFLOW_HOME=str(base / "home"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
    )
    command = [
        sys.executable, "-m", "nbflow", "server", "--port", str(port), "--token", TOKEN,
        "--root-dir", str(base / "root"), "--db-url", db_url,
        "--set", "ServerApp.log_level=WARN",
        "--set", 'NbflowApp.runner_classes={"subprocess": "dispatch:NoopRunner"}',
        "--set", "NbflowApp.dispatch_interval=0.05",
        "--set", "NbflowApp.monitor_interval=60",
        "--set", "NbflowApp.scheduler_interval=3600",
    ]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = (base / "server.log").open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/nbflow/api/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError((base / "server.log").read_text()[-3000:])
            try:
                headers = {"Authorization": f"token {TOKEN}"}
                if httpx.get(f"{url}/flows", headers=headers).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("nbflow server did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def bench_server(base: Path, db_url: str, runs: int) -> dict[str, Any]:
    """Write ``runs`` runs due at one future moment; time their dispatch by the server."""
    import httpx

    with nbflow_server(base, db_url) as url:
        http = httpx.Client(
            base_url=url + "/", headers={"Authorization": f"token {TOKEN}"}, timeout=60
        )
        flow = http.post("flows", json={"name": "dispatch-bench"}).json()
        notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}
        dep = http.post(
            "deployments", json={"flow_id": flow["id"], "name": "d", "notebook": notebook}
        ).json()
        # The runs are written straight into the server's database (creating them is not
        # what is measured), all due at one moment after the last is written.
        from nbflow.client.embedded import EmbeddedClient
        from nbflow.schemas import FlowRunCreate
        from nbflow.states import Scheduled

        due = datetime.now(UTC) + timedelta(seconds=10 + runs / 20)
        store = EmbeddedClient.from_url(db_url)
        for _ in range(runs):
            store.create_flow_run(
                FlowRunCreate(
                    flow_id=flow["id"],
                    deployment_id=dep["id"],
                    mode="batch",
                    runner="subprocess",
                    state=Scheduled(scheduled_time=due),
                )
            )
        store.close()
        if datetime.now(UTC) >= due:
            raise RuntimeError("creating the runs took longer than planned; use fewer --runs")
        time.sleep((due - datetime.now(UTC)).total_seconds())
        start = time.perf_counter()
        while True:
            page = http.get("flow_runs", params={"state_names": "Submitting", "limit": 1}).json()
            if page["total"] >= runs:
                break
            if time.perf_counter() - start > 600:
                raise RuntimeError(f"only {page['total']} of {runs} runs were submitted")
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        http.close()
    return {"runs": runs, "seconds": round(elapsed, 3), "runs_per_s": round(runs / elapsed, 1)}


def main() -> None:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--db", choices=["sqlite", "postgres", "all"], default="all")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "jupyter_extension"))
    results: dict[str, Any] = {"runs": args.runs, "target_runs_per_s": TARGET}
    pg_url = os.environ.get("NBFLOW_TEST_POSTGRES_URL")
    with tempfile.TemporaryDirectory(prefix="nbflow-dispatch-") as tmp:
        backends: list[str] = []
        if args.db in ("sqlite", "all"):
            backends.append("sqlite")
        if args.db in ("postgres", "all"):
            if pg_url:
                backends.append("postgresql")
            else:
                print("PostgreSQL skipped: NBFLOW_TEST_POSTGRES_URL is not set")
        for backend in backends:
            for mode in ("service", "server"):
                base = Path(tmp) / f"{backend}-{mode}"
                base.mkdir()
                if backend == "sqlite":
                    db_url = f"sqlite:///{base / 'nbflow.db'}"
                    measured = (
                        bench_service(db_url, args.runs)
                        if mode == "service"
                        else bench_server(base, db_url, args.runs)
                    )
                else:
                    assert pg_url is not None
                    with scratch_postgres(pg_url, "nbflow_dispatch") as db_url:
                        measured = (
                            bench_service(db_url, args.runs)
                            if mode == "service"
                            else bench_server(base, db_url, args.runs)
                        )
                results[f"{backend}/{mode}"] = measured
                verdict = "ok" if measured["runs_per_s"] >= TARGET else "BELOW TARGET"
                print(
                    f"{backend:10s} {mode:8s} {measured['runs']:5d} runs in "
                    f"{measured['seconds']:7.2f} s = {measured['runs_per_s']:7.1f} runs/s ({verdict})",
                    flush=True,
                )
    results["load_average"] = os.getloadavg()
    results["when"] = datetime.now(UTC).isoformat()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dispatch.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {RESULTS / 'dispatch.json'}")


if __name__ == "__main__":
    main()
