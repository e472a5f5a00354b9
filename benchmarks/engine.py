"""Engine benchmarks: nbflow vs Prefect 3 vs plain Python, side by side in one run.

Run ``make bench`` or ``.venv/bin/python benchmarks/engine.py`` (``--help`` for options).
Each workload runs in a fresh subprocess (``nbflow_side.py`` with nbflow's venv,
``prefect_side.py`` with ``benchmarks/.venv-prefect``) that prints JSON timings; this
harness takes medians and writes ``benchmarks/results/engine.md`` (+ ``engine.json``).
Absolute times are noisy on a shared 2-core machine: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PREFECT_VENV = HERE / ".venv-prefect"
PREFECT_PY = PREFECT_VENV / "bin" / "python"
NBFLOW_PY = Path(sys.executable)
NBFLOW_CLI = NBFLOW_PY.parent / "nbflow"

#: Modules ``import nbflow`` must not pull in (a kernel pays for them otherwise).
HEAVY = ["tornado", "jupyter_server", "IPython", "sqlalchemy", "docker", "kubernetes"]


def median(values: list[float]) -> float:
    """Return the median of the values."""
    return statistics.median(values)


def log(message: str) -> None:
    """Print progress to stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Harness:
    """Run workloads in subprocesses and collect their results."""

    def __init__(self, reps: int, nbflow_home: Path) -> None:
        self.reps = reps
        self.nbflow_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("NBFLOW_", "PREFECT_"))
        }
        self.nbflow_env["NBFLOW_HOME"] = str(nbflow_home)
        self.prefect_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("NBFLOW_", "PREFECT_"))
        }
        self.prefect_env.update(
            PREFECT_HOME=str(PREFECT_VENV / "prefect-home"),
            DO_NOT_TRACK="1",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            # A loaded 2-core machine can exceed the default 20 s start-up wait; this only
            # avoids a spurious failure, it changes nothing that is timed.
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        )
        self.errors: list[str] = []
        #: CPU seconds of each :meth:`wall` command's runs, by label (robust to machine load).
        self.cpu_times: dict[str, list[float]] = {}

    def json_of(self, side: str, args: list[str], timeout: float = 900) -> dict[str, Any] | None:
        """Run a side script and return the JSON it printed (None on failure, noted)."""
        if side == "prefect":
            cmd = [str(PREFECT_PY), str(HERE / "prefect_side.py"), *args]
            env = self.prefect_env
        else:
            cmd = [str(NBFLOW_PY), str(HERE / "nbflow_side.py"), *args]
            env = self.nbflow_env
        log(f"{side}: {' '.join(args)}")
        try:
            proc = subprocess.run(
                cmd, env=env, cwd=HERE, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            self.errors.append(f"{side} {' '.join(args)}: timed out after {timeout:g} s")
            return None
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            self.errors.append(f"{side} {' '.join(args)}: exit {proc.returncode}: {tail}")
            return None
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def wall(self, cmd: list[str], env: dict[str, str], label: str) -> list[float] | None:
        """Return whole-process wall times of ``cmd``: a warm-up, then ``reps`` runs."""
        log(f"process x{self.reps + 1}: {label}")
        times: list[float] = []
        cpu: list[float] = []
        for i in range(self.reps + 1):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if i:
                # CPU time of the process and every child it waited for (Prefect's server).
                cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                self.errors.append(f"{label}: exit {proc.returncode}: {tail}")
                return None
            if i:
                times.append(elapsed)
        self.cpu_times[label] = cpu
        return times

    def import_times(
        self, python: Path, statement: str, env: dict[str, str], label: str
    ) -> dict[str, float] | None:
        """Return median in-process and whole-process times of ``statement`` in fresh processes."""
        code = (
            f"import time; _t = time.perf_counter(); {statement}; print(time.perf_counter() - _t)"
        )
        log(f"import x{self.reps + 1}: {label}")
        inside: list[float] = []
        whole: list[float] = []
        for i in range(self.reps + 1):
            start = time.perf_counter()
            proc = subprocess.run(
                [str(python), "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
            )
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                self.errors.append(f"{label}: exit {proc.returncode}: {tail}")
                return None
            if i:
                inside.append(float(proc.stdout.strip().splitlines()[-1]))
                whole.append(elapsed)
        return {"inside": median(inside), "process": median(whole)}

    def heavy_modules(self, statement: str) -> list[str] | None:
        """Return which of :data:`HEAVY` are in ``sys.modules`` after ``statement``."""
        code = f"import sys; {statement}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
        proc = subprocess.run(
            [str(NBFLOW_PY), "-c", code], env=self.nbflow_env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            self.errors.append(f"heavy-module check {statement!r}: exit {proc.returncode}")
            return None
        return proc.stdout.split()


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Run every selected workload and return the raw results."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="nbflow-bench-home-"))
    h = Harness(args.reps, home)
    prefect = not args.no_prefect and PREFECT_PY.exists()
    if not args.no_prefect and not PREFECT_PY.exists():
        h.errors.append("no Prefect venv: run benchmarks/setup-prefect.sh (Prefect columns empty)")
    only = set(args.only.split(",")) if args.only else {"a", "b", "c", "d", "e"}
    reps = str(args.reps)
    raw: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        },
        "settings": vars(args),
    }
    try:
        if "e" in only:
            raw["import"] = {
                "floor": h.import_times(NBFLOW_PY, "pass", h.nbflow_env, "python -c pass"),
                "nbflow": h.import_times(NBFLOW_PY, "import nbflow", h.nbflow_env, "import nbflow"),
                "nbflow_api": h.import_times(
                    NBFLOW_PY,
                    "from nbflow import flow, task",
                    h.nbflow_env,
                    "from nbflow import flow, task",
                ),
                "prefect": h.import_times(
                    PREFECT_PY, "import prefect", h.prefect_env, "import prefect"
                )
                if prefect
                else None,
            }
            raw["heavy"] = {
                "import nbflow": h.heavy_modules("import nbflow"),
                "from nbflow import flow, task": h.heavy_modules("from nbflow import flow, task"),
            }
        if "a" in only or "c" in only:
            raw["floor"] = h.json_of("nbflow", ["floor", "--n", str(args.tasks), "--reps", reps])
        if "a" in only:
            raw["per_task"] = {
                "nbflow": h.json_of("nbflow", ["per-task", "--n", str(args.tasks), "--reps", reps]),
                "prefect": h.json_of(
                    "prefect", ["per-task", "--n", str(args.prefect_tasks), "--reps", reps]
                )
                if prefect
                else None,
            }
        if "c" in only:
            raw["flow_call"] = {
                "nbflow": h.json_of("nbflow", ["flow-call", "--reps", str(args.flow_calls)]),
                "prefect": h.json_of("prefect", ["flow-call", "--reps", reps]) if prefect else None,
            }
        if "b" in only:
            nb_runs = [
                h.json_of("nbflow", ["sustained", "--n", str(args.sustained_tasks)])
                for _ in range(args.sustained_reps)
            ]
            raw["sustained"] = {
                "nbflow": [r for r in nb_runs if r],
                "prefect": [
                    r
                    for r in (
                        h.json_of(
                            "prefect", ["sustained", "--n", str(args.prefect_sustained_tasks)]
                        )
                        for _ in range(args.prefect_sustained_reps)
                    )
                    if r
                ]
                if prefect
                else [],
            }
        if "d" in only:
            raw["process"] = {
                "floor": h.wall([str(NBFLOW_PY), "-c", "pass"], h.nbflow_env, "python -c pass"),
                "nbflow": h.wall(
                    [str(NBFLOW_CLI), "run", "benchmarks/flows/one_task.py:one", "-q"],
                    h.nbflow_env,
                    "nbflow run one_task.py:one",
                ),
                "prefect": h.wall(
                    [str(PREFECT_PY), str(HERE / "prefect_side.py"), "one-flow"],
                    h.prefect_env,
                    "python prefect_side.py one-flow",
                )
                if prefect
                else None,
            }
            raw["process_cpu"] = {
                "floor": h.cpu_times.get("python -c pass"),
                "nbflow": h.cpu_times.get("nbflow run one_task.py:one"),
                "prefect": h.cpu_times.get("python prefect_side.py one-flow"),
            }
    finally:
        shutil.rmtree(home, ignore_errors=True)
    raw["errors"] = h.errors
    return raw


# -- the report ----------------------------------------------------------------------------


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    r = a / b
    return f"1/{1 / r:,.0f}" if r < 1 else f"{r:,.1f}x"


def _get(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or d.get(key) is None:
            return None
        d = d[key]
    return d


def _med(values: Any) -> float | None:
    return median(values) if values else None


def report(raw: dict[str, Any]) -> str:
    """Return the markdown report of the raw results."""
    rows: list[list[str]] = []
    checks: list[str] = []

    def row(
        label: str,
        floor: float | None,
        nb: float | None,
        pf: float | None,
        target: str = "",
        met: Callable[[], bool] | None = None,
    ) -> None:
        verdict = ""
        if met is not None:
            try:
                verdict = "yes" if met() else "**no**"
            except TypeError:
                verdict = "-"
        rows.append(
            [
                label,
                _fmt(floor),
                _fmt(nb),
                _fmt(pf),
                _ratio(nb, pf),
                _ratio(nb, floor),
                target,
                verdict,
            ]
        )

    for mode, title in (("sequential", "calls"), ("submit", ".submit() + result")):
        nb = _med(_get(raw, "per_task", "nbflow", mode))
        pf = _med(_get(raw, "per_task", "prefect", mode))
        fl = _med(_get(raw, "floor", mode))
        if "per_task" in raw:
            row(
                f"(a) per task, {title}, inside the flow body",
                fl,
                nb,
                pf,
                "≤ 1/100 of Prefect",
                lambda nb=nb, pf=pf: nb <= pf / 100,
            )

    if "sustained" in raw:
        nb_runs = raw["sustained"]["nbflow"]
        pf_runs = raw["sustained"]["prefect"]

        def per_task_total(runs: list[dict[str, Any]]) -> float | None:
            return _med([r["total_seconds"] / r["n"] for r in runs]) if runs else None

        nb_lag = _med([r["lag_after_flow"] for r in nb_runs])
        pf_lag = _med([r["lag_after_flow"] for r in pf_runs])
        nb_n = nb_runs[0]["n"] if nb_runs else None
        pf_n = pf_runs[0]["n"] if pf_runs else None
        row(
            f"(b) per task, flow start → store holds all (nbflow {nb_n}, Prefect {pf_n} tasks)",
            None,
            per_task_total(nb_runs),
            per_task_total(pf_runs),
        )
        row(
            "(b) flow end → store holds every task run (nbflow: from the body's last task)",
            None,
            nb_lag,
            pf_lag,
            "nbflow ≤ 1 s",
            lambda: nb_lag <= 1.0,
        )
        incomplete = [r for r in nb_runs + pf_runs if r["recorded"] < r["n"]]
        if incomplete:
            checks.append(
                f"(b) {len(incomplete)} run(s) timed out before every task run was recorded"
            )

    if "flow_call" in raw:
        row(
            "(c) empty flow call, in one process",
            _med(_get(raw, "floor", "per_call")),
            _med(_get(raw, "flow_call", "nbflow", "per_call")),
            _med(_get(raw, "flow_call", "prefect", "per_call")),
        )

    if "process" in raw:
        nb = _med(_get(raw, "process", "nbflow"))
        pf = _med(_get(raw, "process", "prefect"))
        row(
            "(d) whole process: one one-task flow (`nbflow run` vs `python` + Prefect)",
            _med(_get(raw, "process", "floor")),
            nb,
            pf,
            "≤ 1/20 of Prefect",
            lambda: nb <= pf / 20,
        )

    if "process_cpu" in raw:
        row(
            "(d) the same, CPU time (user + sys, with child processes)",
            _med(_get(raw, "process_cpu", "floor")),
            _med(_get(raw, "process_cpu", "nbflow")),
            _med(_get(raw, "process_cpu", "prefect")),
        )

    if "import" in raw:
        imp = raw["import"]
        row(
            "(e) `import nbflow` / `import prefect`, in-process",
            None,
            _get(imp, "nbflow", "inside"),
            _get(imp, "prefect", "inside"),
            "< 0.2 s",
            lambda: imp["nbflow"]["inside"] < 0.2,
        )
        row(
            "(e) `from nbflow import flow, task` / `import prefect`, in-process",
            None,
            _get(imp, "nbflow_api", "inside"),
            _get(imp, "prefect", "inside"),
        )
        row(
            "(e) `python -c 'import …'`, whole process",
            _get(imp, "floor", "process"),
            _get(imp, "nbflow", "process"),
            _get(imp, "prefect", "process"),
        )
        for statement, mods in (raw.get("heavy") or {}).items():
            listed = "check failed" if mods is None else ", ".join(mods) or "none"
            checks.append(f"`{statement}` imports of {', '.join(HEAVY)}: **{listed}**")

    m = raw["machine"]
    s = raw["settings"]
    out = [
        "# Engine benchmarks: nbflow vs Prefect 3 vs plain Python",
        "",
        f"{m['date']}, Python {m['python']}, {m['cpus']} CPUs, load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}"
        f" (at end {', '.join(f'{x:.2f}' for x in m.get('load_average_at_end', []))}); "
        f"took {raw.get('elapsed_seconds', 0):.0f} s. "
        f"Median of {s['reps']} after a warm-up (see benchmarks/README.md for each workload). "
        "The floor is plain Python: a function call, a thread-pool submit, `python -c pass`.",
        "",
        "| measure | floor | nbflow | Prefect | nbflow/Prefect | nbflow/floor | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    if checks or raw.get("errors"):
        out.append("")
    out += [f"- {c}" for c in checks]
    out += [f"- error: {e}" for e in raw.get("errors", [])]
    return "\n".join(out) + "\n"


def main() -> int:
    """Run the benchmarks, print the table and save it under benchmarks/results/."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="measured repetitions (5)")
    parser.add_argument("--tasks", type=int, default=200, help="(a) nbflow tasks per flow (200)")
    parser.add_argument(
        "--prefect-tasks", type=int, default=100, help="(a) Prefect tasks per flow (100)"
    )
    parser.add_argument(
        "--flow-calls", type=int, default=50, help="(c) nbflow empty-flow calls (50)"
    )
    parser.add_argument(
        "--sustained-tasks", type=int, default=10_000, help="(b) nbflow tasks (10000)"
    )
    parser.add_argument("--sustained-reps", type=int, default=3, help="(b) nbflow runs (3)")
    parser.add_argument(
        "--prefect-sustained-tasks", type=int, default=1000, help="(b) Prefect tasks (1000)"
    )
    parser.add_argument(
        "--prefect-sustained-reps", type=int, default=1, help="(b) Prefect runs (1)"
    )
    parser.add_argument("--only", help="comma-separated subset of a,b,c,d,e")
    parser.add_argument("--no-prefect", action="store_true", help="skip the Prefect side")
    parser.add_argument(
        "--quick", action="store_true", help="3 reps and smaller sizes (a smoke run)"
    )
    args = parser.parse_args()
    if args.quick:
        args.reps, args.sustained_reps = 3, 1
        args.sustained_tasks, args.prefect_sustained_tasks = 2000, 200
        args.prefect_tasks = 50
    started = time.perf_counter()
    raw = run_all(args)
    raw["elapsed_seconds"] = time.perf_counter() - started
    raw["machine"]["load_average_at_end"] = list(os.getloadavg())
    text = report(raw)
    (RESULTS / "engine.json").write_text(json.dumps(raw, indent=2))
    (RESULTS / "engine.md").write_text(text)
    print(text)
    log(f"done in {raw['elapsed_seconds']:.0f} s; saved {RESULTS / 'engine.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
