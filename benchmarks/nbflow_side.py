"""nbflow-side workloads and the plain-Python floor; run by nbflow's venv python.

Usage: ``python nbflow_side.py WORKLOAD [options]``; prints one JSON object on stdout's last
line.  Times are seconds.  The harness (``engine.py``) sets ``NBFLOW_HOME`` to a scratch
directory.  The workloads mirror ``prefect_side.py`` line for line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nbflow import flow, task


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


def _plain(i: int) -> int:
    return i


def _repeat(fn: Any, reps: int, *args: Any) -> list[float]:
    fn(*args)  # warm-up
    return [float(fn(*args)) for _ in range(reps)]


def per_task(n: int, reps: int) -> dict[str, Any]:
    """Seconds per task, timed inside the flow body (sequential calls, then .submit())."""
    seq = _repeat(sequential_tasks, reps, n)
    sub = _repeat(submitted_tasks, reps, n)
    return {"n": n, "sequential": [t / n for t in seq], "submit": [t / n for t in sub]}


def floor(n: int, reps: int) -> dict[str, Any]:
    """The floor: a plain call, and a thread-pool submit + result, per item."""

    def calls() -> float:
        start = time.perf_counter()
        for i in range(n):
            _plain(i)
        return time.perf_counter() - start

    def submits() -> float:
        with ThreadPoolExecutor() as pool:
            start = time.perf_counter()
            futures = [pool.submit(_plain, i) for i in range(n)]
            for future in futures:
                future.result()
            return time.perf_counter() - start

    def empty_call() -> float:
        start = time.perf_counter()
        _plain(0)
        return time.perf_counter() - start

    return {
        "n": n,
        "sequential": [t / n for t in _repeat(calls, reps)],
        "submit": [t / n for t in _repeat(submits, reps)],
        "per_call": _repeat(empty_call, reps),
    }


def flow_call(reps: int) -> dict[str, Any]:
    """Seconds per call of an empty flow, called repeatedly in one process."""

    def timed() -> float:
        start = time.perf_counter()
        empty()
        return time.perf_counter() - start

    return {"per_call": _repeat(timed, reps)}


def _count_completed(flow_run_id: Any) -> int:
    """Count the run's COMPLETED task runs with one COUNT query (Prefect's side: its count API)."""
    import sqlalchemy as sa

    from nbflow.client import get_client
    from nbflow.orchestration.store.tables import task_runs

    store = get_client().store  # type: ignore[attr-defined]  # the embedded client
    query = sa.select(sa.func.count()).where(
        task_runs.c.flow_run_id == flow_run_id, task_runs.c.state_type == "COMPLETED"
    )
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def sustained(n: int, timeout: float) -> dict[str, Any]:
    """Run an n-task flow, then query the store until it holds every task run as COMPLETED.

    The lag is counted from the end of the flow body (the last task run finished), not
    from the flow call's return: it includes the engine's final flush of the recorder.
    """
    from nbflow.client import get_client
    from nbflow.schemas import FlowRunFilter

    start = time.perf_counter()
    cpu_start = time.process_time()
    body_end = sustained_tasks(n)
    flow_end = time.perf_counter()
    # The newest run of this flow is the one that just returned (a scratch NBFLOW_HOME).
    (run,) = get_client().read_flow_runs(FlowRunFilter(flow_names=[sustained_tasks.name], limit=1))
    recorded = 0
    while True:
        recorded = _count_completed(run.id)
        now = time.perf_counter()
        if recorded >= n or now - body_end > timeout:
            break
        time.sleep(0.01)
    return {
        "n": n,
        "flow_seconds": flow_end - start,
        "recorded": recorded,
        "lag_after_flow": now - body_end,
        "tail_in_flow_call": flow_end - body_end,
        "total_seconds": now - start,
        "process_cpu_seconds": time.process_time() - cpu_start,
    }


@flow
def sustained_tasks(n: int) -> float:
    for i in range(n):
        noop(i)
    return time.perf_counter()


def main() -> None:
    """Run one workload and print its JSON result."""
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=["per-task", "floor", "flow-call", "sustained"])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if args.workload == "per-task":
        result = per_task(args.n, args.reps)
    elif args.workload == "floor":
        result = floor(args.n, args.reps)
    elif args.workload == "flow-call":
        result = flow_call(args.reps)
    else:
        result = sustained(args.n, args.timeout)
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
