"""Prefect-side workloads; run by ``benchmarks/.venv-prefect/bin/python``, never imported.

Usage: ``python prefect_side.py WORKLOAD [options]``; prints one JSON object on stdout's
last line.  Times are seconds.  The harness (``engine.py``) sets PREFECT_HOME,
DO_NOT_TRACK and PREFECT_SERVER_ANALYTICS_ENABLED.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from prefect import flow, task


@task
def noop(i: int) -> int:
    return i


@flow
def sequential_tasks(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        noop(i)
    return time.perf_counter() - start


@flow
def submitted_tasks(n: int) -> float:
    start = time.perf_counter()
    futures = [noop.submit(i) for i in range(n)]
    for future in futures:
        future.result()
    return time.perf_counter() - start


@flow
def empty() -> None:
    return None


def _repeat(fn: Any, reps: int, *args: Any) -> list[float]:
    fn(*args)  # warm-up
    return [float(fn(*args)) for _ in range(reps)]


def per_task(n: int, reps: int) -> dict[str, Any]:
    """Seconds per task, timed inside the flow body (sequential calls, then .submit())."""
    seq = _repeat(sequential_tasks, reps, n)
    sub = _repeat(submitted_tasks, reps, n)
    return {
        "n": n,
        "sequential": [t / n for t in seq],
        "submit": [t / n for t in sub],
    }


def flow_call(reps: int) -> dict[str, Any]:
    """Seconds per call of an empty flow, called repeatedly in one process."""

    def timed() -> float:
        start = time.perf_counter()
        empty()
        return time.perf_counter() - start

    return {"per_call": _repeat(timed, reps)}


def sustained(n: int, timeout: float) -> dict[str, Any]:
    """Run an n-task flow, then poll the API until it holds every task run as COMPLETED."""
    from prefect.client.orchestration import get_client

    start = time.perf_counter()
    state = sequential_tasks(n, return_state=True)
    flow_end = time.perf_counter()
    flow_run_id = str(state.state_details.flow_run_id)
    body = {
        "flow_runs": {"id": {"any_": [flow_run_id]}},
        "task_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
    }
    recorded = 0
    with get_client(sync_client=True) as client:
        while True:
            recorded = int(client._client.post("/task_runs/count", json=body).json())
            now = time.perf_counter()
            if recorded >= n or now - flow_end > timeout:
                break
            time.sleep(0.05)
    return {
        "n": n,
        "flow_seconds": flow_end - start,
        "recorded": recorded,
        "lag_after_flow": now - flow_end,
        "total_seconds": now - start,
    }


def one_flow() -> dict[str, Any]:
    """What a whole process does for ``nbflow run`` of a one-task flow."""
    sequential_tasks(1)
    return {}


def main() -> None:
    """Run one workload and print its JSON result."""
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=["per-task", "flow-call", "sustained", "one-flow"])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    if args.workload == "per-task":
        result = per_task(args.n, args.reps)
    elif args.workload == "flow-call":
        result = flow_call(args.reps)
    elif args.workload == "sustained":
        result = sustained(args.n, args.timeout)
    else:
        result = one_flow()
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
