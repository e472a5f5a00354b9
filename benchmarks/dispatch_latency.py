"""Dispatch latency: submit → claimed, polling vs event-driven, at a steady rate of runs.

Real ``nbflow server`` subprocesses with their services on.  The benchmark sends
``POST /deployments/{id}/runs`` ("run now") open-loop at ``--rate`` runs/s for
``--seconds`` seconds (request *i* leaves at ``t0 + i/rate`` from a small thread pool, so
a slow answer never lowers the rate), then reads each run's state history: the latency
of a run is the timestamp of its ``Pending`` ("claimed by ...") state minus the moment
its request left.  Both are this machine's clock.

The runner is :class:`HoldRunner` (through ``NbflowApp.runner_classes``): submission is
free and its runs never exit, so no run's exit wakes the dispatcher — what is measured
is how the dispatcher learns that a run is due:

- **polling**: ``dispatch_event_driven=False``, a pass every ``dispatch_interval`` (2 s,
  the default): the latency is up to one interval;
- **event-driven**: the default: the store's commit wakes this server's dispatcher;
- **across servers** (PostgreSQL only): two servers on one database; runs are created
  through server A, which dispatches no runner the runs use; server B claims them,
  woken by A's ``NOTIFY`` through its ``LISTEN`` connection.  In this case a websocket on
  server B also records when each run's first event arrives (event delivery across
  servers: request left → event on B's ``/events``).

SQLite, and PostgreSQL when ``NBFLOW_TEST_POSTGRES_URL`` is set (a scratch schema).

    .venv/bin/python benchmarks/dispatch_latency.py [--rate 10] [--seconds 20] [--db sqlite|postgres|all]

The table is printed and written to ``benchmarks/results/dispatch_latency.md``, the raw
figures to ``benchmarks/results/dispatch_latency.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from _scratch_db import scratch_postgres

from nbflow.runners import Runner
from nbflow.schemas import FlowRun

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TOKEN = "bench-dispatch-latency"
#: Issue 14: a due run is claimed within 50 ms.
TARGET_MS = 50.0


class HoldRunner(Runner):
    """A runner that starts nothing and whose runs never exit (they stay Submitting)."""

    name: ClassVar[str] = "hold"
    _forever: ClassVar[threading.Event] = threading.Event()

    def submit(self, flow_run: FlowRun, job_variables: Mapping[str, Any] | None = None) -> str:
        return f"hold-{flow_run.id}"

    def kill(self, infrastructure_id: str, grace_seconds: float = 30.0) -> None:
        """Nothing to stop."""

    def wait(self, infrastructure_id: str, timeout: float | None = None) -> int | None:
        """Never returns an exit code (a run's exit would wake the dispatcher)."""
        self._forever.wait(timeout)
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nbflow_server(base: Path, db_url: str, *settings: str) -> Iterator[str]:
    """Start ``nbflow server`` with services and :class:`HoldRunner`; yield its API URL."""
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
        "--set", 'NbflowApp.runner_classes={"subprocess": "dispatch_latency:HoldRunner"}',
        "--set", "NbflowApp.monitor_interval=60",
        "--set", "NbflowApp.scheduler_interval=3600",
        *(arg for s in settings for arg in ("--set", s)),
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


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class EventWatcher:
    """Record when each run's first event reaches a server's ``/events`` websocket."""

    def __init__(self, api_url: str) -> None:
        import websocket  # websocket-client, a dependency of jupyter_server

        url = api_url.replace("http://", "ws://") + "/events"
        self.ws = websocket.create_connection(url, header=[f"Authorization: token {TOKEN}"])
        self.first: dict[str, float] = {}
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                message = self.ws.recv()
            except Exception:
                return
            if not message:
                return  # closed
            arrived = time.time()
            event = json.loads(message)
            run_id = event.get("flow_run_id")
            if event.get("type") == "flow_run_state" and run_id:
                self.first.setdefault(run_id, arrived)

    def close(self) -> None:
        self.ws.close()


def measure(
    submit_url: str, rate: float, seconds: float, events_url: str | None = None
) -> dict[str, Any]:
    """Send run-now requests at ``rate``/s through ``submit_url``; return the latencies
    (and, with ``events_url``, when each run's first event reached that server's websocket)."""
    import httpx

    watcher = EventWatcher(events_url) if events_url else None

    http = httpx.Client(
        base_url=submit_url + "/", headers={"Authorization": f"token {TOKEN}"}, timeout=60
    )
    flow = http.post("flows", json={"name": f"latency-{time.monotonic_ns()}"}).json()
    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}
    dep = http.post(
        "deployments",
        json={"flow_id": flow["id"], "name": "d", "notebook": notebook, "runner": "subprocess"},
    ).json()
    count = int(rate * seconds)
    sent: dict[str, float] = {}
    lag: list[float] = []
    lock = threading.Lock()

    def send(i: int, t0: float) -> None:
        at = t0 + i / rate
        time.sleep(max(0.0, at - time.perf_counter()))
        lag.append(time.perf_counter() - at)
        left = time.time()
        run = http.post(f"deployments/{dep['id']}/runs", json={}).json()
        with lock:
            sent[run["id"]] = left

    t0 = time.perf_counter() + 0.5
    with ThreadPoolExecutor(16) as pool:
        for future in [pool.submit(send, i, t0) for i in range(count)]:
            future.result()
    latencies: list[float] = []
    deadline = time.monotonic() + 120
    for run_id, left in sent.items():
        while True:
            states = http.get(f"flow_runs/{run_id}/states").json()["items"]
            claimed = [s for s in states if s["name"] == "Pending"]
            if claimed:
                stamp = datetime.fromisoformat(claimed[0]["timestamp"]).timestamp()
                latencies.append((stamp - left) * 1000)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run_id} was never claimed")
            time.sleep(0.1)
    http.close()
    result: dict[str, Any] = {
        "runs": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(_percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1),
        "sender_lag_p99_ms": round(_percentile(lag, 99) * 1000, 1),
    }
    if watcher is not None:
        end = time.monotonic() + 30
        while len(watcher.first) < len(sent) and time.monotonic() < end:
            time.sleep(0.1)
        watcher.close()
        delivery = [
            (watcher.first[r] - left) * 1000 for r, left in sent.items() if r in watcher.first
        ]
        result["events"] = {
            "seen": len(delivery),
            "p50_ms": round(statistics.median(delivery), 1) if delivery else None,
            "p99_ms": round(_percentile(delivery, 99), 1) if delivery else None,
        }
    return result


def run_case(
    tmp: Path, backend: str, case: str, pg_url: str | None, rate: float, seconds: float
) -> dict[str, Any]:
    """Start the servers of one case and measure it."""
    base = tmp / f"{backend}-{case}"
    base.mkdir()
    with ExitStack() as stack:
        if backend == "sqlite":
            db_url = f"sqlite:///{base / 'nbflow.db'}"
        else:
            assert pg_url is not None
            db_url = stack.enter_context(scratch_postgres(pg_url, "nbflow_latency"))
        if case == "polling":
            url = stack.enter_context(
                nbflow_server(base, db_url, "NbflowApp.dispatch_event_driven=False")
            )
        elif case == "event-driven":
            url = stack.enter_context(nbflow_server(base, db_url))
        else:  # across servers: A takes the requests, B (woken by NOTIFY) claims
            url = stack.enter_context(
                nbflow_server(base / "a", db_url, "NbflowApp.dispatch_runners=elsewhere")
            )
            other = stack.enter_context(nbflow_server(base / "b", db_url))
            time.sleep(2)
            # Also: how soon B's websocket shows the runs created through A.
            return measure(url, rate, seconds, events_url=other)
        time.sleep(2)  # let the servers' first passes and LISTEN connections settle
        return measure(url, rate, seconds)


def main() -> None:
    """Run every case and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="runs per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="sending time per case")
    parser.add_argument("--db", choices=["sqlite", "postgres", "all"], default="all")
    args = parser.parse_args()
    pg_url = os.environ.get("NBFLOW_TEST_POSTGRES_URL")
    cases: list[tuple[str, str]] = []
    if args.db in ("sqlite", "all"):
        cases += [("sqlite", "polling"), ("sqlite", "event-driven")]
    if args.db in ("postgres", "all"):
        if pg_url:
            cases += [
                ("postgresql", "polling"),
                ("postgresql", "event-driven"),
                ("postgresql", "across servers"),
            ]
        else:
            print("PostgreSQL skipped: NBFLOW_TEST_POSTGRES_URL is not set")
    load_before = os.getloadavg()
    results: dict[str, Any] = {"rate": args.rate, "seconds": args.seconds, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="nbflow-latency-") as tmp:
        for backend, case in cases:
            measured = run_case(Path(tmp), backend, case, pg_url, args.rate, args.seconds)
            results["cases"][f"{backend}/{case}"] = measured
            print(f"{backend:10s} {case:15s} {measured}", flush=True)
    results["load_average"] = {"before": load_before, "after": os.getloadavg()}
    results["when"] = datetime.now(UTC).isoformat()
    lines = [
        f"Dispatch latency, submit → claimed, {args.rate:g} runs/s for {args.seconds:g} s per "
        f"case (dispatch_interval 2 s); load average {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; target p99 ≤ {TARGET_MS:g} ms (event-driven)",
        "",
        "| store | dispatch | runs | p50 ms | p99 ms | max ms | sender lag p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, m in results["cases"].items():
        backend, case = key.split("/")
        lines.append(
            f"| {backend} | {case} | {m['runs']} | {m['p50_ms']} | {m['p99_ms']} | "
            f"{m['max_ms']} | {m['sender_lag_p99_ms']} |"
        )
    for key, m in results["cases"].items():
        if "events" in m:
            e = m["events"]
            lines += [
                "",
                f"Event delivery across servers ({key}): a run created through server A, its "
                f"first event on server B's /events websocket: {e['seen']} runs, "
                f"p50 {e['p50_ms']} ms, p99 {e['p99_ms']} ms (target p99 < 200 ms).",
            ]
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dispatch_latency.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "dispatch_latency.md").write_text(table + "\n")
    print(f"\nwritten {RESULTS / 'dispatch_latency.md'}")


if __name__ == "__main__":
    main()
