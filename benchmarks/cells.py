"""Per-cell overhead of ``%%task`` against a plain cell, in a real kernel (nbclient).

Not a test: it prints (and saves to ``benchmarks/results/cells.md``) the median time per
cell for N trivial cells run each way in the same kernel, and the ratio:

- plain:        ``x_i = i``
- task:         ``%%task`` + ``x_i = i``            (a task run recorded in the store)
- task+cache:   ``%%task --cache`` + ``y_i = x_i``  (fingerprint, cache lookup, persist)
- cached hit:   the same cells again in a fresh kernel: every one is a cache hit

The kernel uses a scratch ``NBFLOW_HOME`` (embedded SQLite store).  Run:
``.venv/bin/python benchmarks/cells.py [--cells 100] [--reps 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

RESULTS = Path(__file__).parent / "results"


def _timed_cells(client: NotebookClient, nb: Any, indices: range) -> list[float]:
    times = []
    for i in indices:
        started = time.perf_counter()
        client.execute_cell(nb.cells[i], i)
        times.append(time.perf_counter() - started)
    return times


def _run(sources: list[str], first_timed: int, env: dict[str, str], cwd: str) -> list[float]:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": cwd}}
    )
    with client.setup_kernel(env=env):
        for i in range(first_timed):
            client.execute_cell(nb.cells[i], i)
        return _timed_cells(client, nb, range(first_timed, len(sources)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    n = args.cells
    setup = ["%load_ext nbflow", "%%flow bench\nscale = 1", "import time"]
    plain = [f"x_{i} = {i}" for i in range(n)]
    task = [f"%%task\nx_{i} = {i}" for i in range(n)]
    cached = [f"%%task --cache\ny_{i} = x_{i}" for i in range(n)]
    medians: dict[str, list[float]] = {"plain": [], "task": [], "task+cache": [], "cache hit": []}
    for _ in range(args.reps):
        with tempfile.TemporaryDirectory() as tmp:
            env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW")}
            env["NBFLOW_HOME"] = tmp
            # plain and task cells in one kernel, interleaved blocks after the same set-up
            times = _run([*setup, *plain, *task, *plain[:1]], len(setup), env, tmp)
            medians["plain"].append(statistics.median(times[:n]))
            medians["task"].append(statistics.median(times[n : 2 * n]))
            miss = _run([*setup, *plain, *cached], len(setup) + n, env, tmp)
            medians["task+cache"].append(statistics.median(miss))
            hit = _run([*setup, *plain, *cached], len(setup) + n, env, tmp)
            medians["cache hit"].append(statistics.median(hit))
    base = statistics.median(medians["plain"])
    lines = [
        f"# %%task overhead ({n} trivial cells, median of {args.reps} runs, one kernel each)",
        "",
        "| cell | median per cell | vs plain | overhead per cell |",
        "|---|---:|---:|---:|",
    ]
    for name, values in medians.items():
        value = statistics.median(values)
        lines.append(
            f"| {name} | {value * 1000:.2f} ms | {value / base:.2f}x | {(value - base) * 1000:+.2f} ms |"
        )
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cells.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
