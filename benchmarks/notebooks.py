"""Notebook runs: ``nbflow run`` / ``nbflow batch`` vs the ``papermill`` CLI, side by side.

Whole processes, timed from the outside, interleaved in one run so that the machine's load
hits both sides alike; the ratios are what to read.

- end to end: a 10-cell and a 100-cell notebook, ``nbflow run NB -p x=3`` (embedded store,
  subprocess runner) vs ``papermill NB OUT -p x 3``; median of ``--reps`` runs each.
- throughput: ``--runs`` runs of the 10-cell notebook, 1 and 2 at a time:
  ``nbflow batch NB --grid x=1,...,K -c C`` vs K ``papermill`` processes, C at a time;
  runs per minute.
- where the time goes: the pieces of a run's start-up, each in a fresh process.

Targets (issue 4): 10-cell end to end <= 0.5x papermill; throughput >= 2x papermill at 2
at a time.

    .venv/bin/python benchmarks/notebooks.py [--reps 5] [--runs 8] [--quick]

Results: printed, and saved to ``benchmarks/results/notebooks.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NBFLOW = str(BIN / "nbflow")
PAPERMILL = str(BIN / "papermill")
RESULTS = ROOT / "benchmarks" / "results"


def write_notebook(path: Path, cells: int) -> None:
    """Write a notebook of ``cells`` code cells; the first is papermill's parameters cell."""
    sources = ["x = 1"] + [f"y{i} = x + {i}\nprint(y{i})" for i in range(cells - 1)]
    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "cells": [
            {
                "cell_type": "code",
                "id": f"c{i}",
                "metadata": {"tags": ["parameters"]} if i == 0 else {},
                "execution_count": None,
                "outputs": [],
                "source": src,
            }
            for i, src in enumerate(sources)
        ],
    }
    path.write_text(json.dumps(nb))


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Run a command to completion; return its wall time (it must succeed)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed ({proc.returncode}):\n{proc.stderr.decode()[-2000:]}")
    return elapsed


def end_to_end(work: Path, env: dict[str, str], cells: int, reps: int) -> dict[str, float]:
    nb = work / f"nb{cells}.ipynb"
    write_notebook(nb, cells)
    ours, theirs = [], []
    timed([NBFLOW, "run", str(nb), "-p", "x=3"], env, work)  # warm-up: store, caches
    timed([PAPERMILL, str(nb), str(work / "out.ipynb"), "-p", "x", "3"], env, work)
    for _ in range(reps):
        ours.append(timed([NBFLOW, "run", str(nb), "-p", "x=3"], env, work))
        theirs.append(
            timed([PAPERMILL, str(nb), str(work / "out.ipynb"), "-p", "x", "3"], env, work)
        )
    return {"nbflow": statistics.median(ours), "papermill": statistics.median(theirs)}


def throughput(work: Path, env: dict[str, str], runs: int, at_once: int) -> dict[str, float]:
    nb = work / "nb10.ipynb"
    write_notebook(nb, 10)
    values = ",".join(str(i) for i in range(runs))
    ours = timed(
        [NBFLOW, "batch", str(nb), "--grid", f"x={values}", "-c", str(at_once), "--json"],
        env,
        work,
    )

    def one(i: int) -> float:
        out = work / f"pm-{at_once}-{i}.ipynb"
        return timed([PAPERMILL, str(nb), str(out), "-p", "x", str(i)], env, work)

    start = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(one, range(runs)))
    theirs = time.perf_counter() - start
    return {"nbflow": runs / ours * 60, "papermill": runs / theirs * 60}


def pieces(env: dict[str, str], work: Path) -> dict[str, float]:
    py = sys.executable
    skip = "import sys; sys.modules['rfc3987_syntax'] = None; "
    kernel = (
        "from jupyter_client.manager import start_new_kernel\n"
        "km, kc = start_new_kernel(kernel_name='python3')\n"
        "kc.stop_channels(); km.shutdown_kernel(now=True)\n"
    )
    probes = {
        "python -c pass": [py, "-c", "pass"],
        "import papermill": [py, "-c", "import papermill"],
        "import papermill (no RFC 3987 grammar)": [py, "-c", skip + "import papermill"],
        "import nbflow.execution.executor (executor)": [
            py,
            "-c",
            skip + "import nbflow.execution.executor",
        ],
        "import nbflow.cli.notebook_run (parent)": [py, "-c", "import nbflow.cli.notebook_run"],
        "start a python3 kernel until ready": [py, "-c", kernel],
    }
    out = {}
    for name, argv in probes.items():
        out[name] = statistics.median(timed(argv, env, work) for _ in range(3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="reps=2, runs=4")
    args = parser.parse_args()
    reps, runs = (2, 4) if args.quick else (args.reps, args.runs)

    with tempfile.TemporaryDirectory(prefix="nbflow-bench-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, NBFLOW_HOME=str(work / "home"))
        env.pop("NBFLOW_API_URL", None)
        env.pop("NBFLOW_DATABASE_URL", None)
        load_before = os.getloadavg()[0]
        results: dict[str, object] = {
            "e2e_10": end_to_end(work, env, 10, reps),
            "e2e_100": end_to_end(work, env, 100, reps),
            "throughput_1": throughput(work, env, runs, 1),
            "throughput_2": throughput(work, env, runs, 2),
            "pieces": pieces(env, work),
            "load_average": [load_before, os.getloadavg()[0]],
            "reps": reps,
            "runs": runs,
        }

    e10, e100 = results["e2e_10"], results["e2e_100"]
    t1, t2 = results["throughput_1"], results["throughput_2"]
    assert isinstance(e10, dict) and isinstance(e100, dict)
    assert isinstance(t1, dict) and isinstance(t2, dict)
    rows = [
        ("10-cell notebook, end to end (s)", e10, e10["nbflow"] / e10["papermill"], "<= 0.5"),
        ("100-cell notebook, end to end (s)", e100, e100["nbflow"] / e100["papermill"], "-"),
        ("throughput, 1 at a time (runs/min)", t1, t1["nbflow"] / t1["papermill"], "-"),
        ("throughput, 2 at a time (runs/min)", t2, t2["nbflow"] / t2["papermill"], ">= 2"),
    ]
    lines = [
        f"load average {results['load_average']}, reps {reps}, runs {runs}",
        "",
        "| workload | nbflow | papermill | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for name, vals, ratio, target in rows:
        lines.append(
            f"| {name} | {vals['nbflow']:.2f} | {vals['papermill']:.2f} | {ratio:.2f} | {target} |"
        )
    lines += ["", "| start-up piece (fresh process) | seconds |", "|---|---|"]
    pieces_ = results["pieces"]
    assert isinstance(pieces_, dict)
    lines += [f"| {k} | {v:.2f} |" for k, v in pieces_.items()]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "notebooks.md").write_text(text + "\n")
    (RESULTS / "notebooks.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
