"""Server start: submit → Completed of a 10-cell notebook, warm pool on vs off vs papermill.

Two real ``nbflow server`` subprocesses with their services on (SQLite, the subprocess
runner, event-driven dispatch), one with ``NbflowApp.warm_executors=1`` and one with
``0``, and the ``papermill`` CLI, interleaved in one run so that the machine's load hits
every side alike; the ratios to papermill are what to read.

A server run is ``POST /deployments/{id}/runs`` ("run now") of a deployment of the
notebook of ``benchmarks/notebooks.py`` (10 code cells): its time is the timestamp of
its Completed state minus the moment the request left (one clock: this machine's).  Its
state history splits that time:

- **claim**: request left → Pending (the dispatcher claimed it);
- **hand-off**: Pending → Running (Submitting, the process starts or the executor ahead
  takes the run, reads the run and its notebook, proposes Running);
- **execute**: Running → Completed (the kernel gets the run's env, the cells run, the
  output notebook is stored, the kernel stops).

Before each warm run the benchmark waits until an executor ahead is ready (it has started
its kernel); the cold server gets the same pause.  papermill runs the same notebook file,
``papermill NB OUT``, timed from the outside.  Target (issue 14): warm pool ≤ 0.25x
papermill.

    .venv/bin/python benchmarks/server_start.py [--reps 7]

Results: printed, and saved to ``benchmarks/results/server_start.{md,json}`` (git-ignored).
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
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from notebooks import write_notebook

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BIN = Path(sys.executable).parent
PAPERMILL = str(BIN / "papermill")
TOKEN = "bench-server-start"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
#: Issue 14: submit → Completed with the warm pool ≤ 0.25x papermill's wall time.
TARGET = 0.25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """An ``nbflow server`` subprocess with its services on."""

    def __init__(self, base: Path, warm_executors: int) -> None:
        self.base = base
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/nbflow/api/v1"
        base.mkdir(parents=True)
        (base / "root").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW")}
        env.update(
            NBFLOW_HOME=str(base / "home"),
            JUPYTER_RUNTIME_DIR=str(base / "runtime"),
            JUPYTER_CONFIG_DIR=str(base / "config"),
        )
        command = [
            sys.executable, "-m", "nbflow", "server", "--port", str(self.port),
            "--token", TOKEN, "--root-dir", str(base / "root"),
            "--db-url", f"sqlite:///{base / 'nbflow.db'}",
            "--set", "ServerApp.log_level=WARN",
        ]  # fmt: skip
        (base / "config").mkdir()
        settings = {
            "warm_executors": warm_executors,
            "runner_defaults": {"subprocess": {"stream_output": False}},
        }
        config = base / "config" / "jupyter_server_config.json"
        config.write_text(json.dumps({"NbflowApp": settings}))
        if os.geteuid() == 0:
            command.append("--allow-root")
        self._log = (base / "server.log").open("wb")
        self.proc = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(
            base_url=self.url + "/", headers={"Authorization": f"token {TOKEN}"}, timeout=60
        )
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError((base / "server.log").read_text()[-3000:])
            try:
                if self.http.get("flows").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("nbflow server did not start")
            time.sleep(0.2)

    def deploy(self, notebook: dict[str, Any]) -> str:
        """Create a deployment of ``notebook``; return its id."""
        flow = self.http.post("flows", json={"name": "server-start"}).json()
        dep = self.http.post(
            "deployments",
            json={"flow_id": flow["id"], "name": "ten-cells", "notebook": notebook},
        ).json()
        return str(dep["id"])

    def standby_ready(self) -> bool:
        """Whether an executor ahead has started its kernel (a child of the standby)."""
        children = _children()
        return any(
            b"--standby" in _cmdline(pid) and children.get(pid)
            for pid in _below(self.proc.pid, children)
        )

    def run(self, deployment_id: str) -> dict[str, float]:
        """Run the deployment now and follow it to its end; return the phases in seconds."""
        left = time.time()
        run = self.http.post(f"deployments/{deployment_id}/runs", json={}).json()
        deadline = time.monotonic() + 300
        while True:
            state = self.http.get(f"flow_runs/{run['id']}").json()["state"]
            if state["type"] in TERMINAL:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run['id']} did not end")
            time.sleep(0.02)
        if state["type"] != "COMPLETED":
            raise RuntimeError(f"run {run['id']} ended {state}")
        states = self.http.get(f"flow_runs/{run['id']}/states").json()["items"]
        stamp = {
            s["name"]: datetime.fromisoformat(s["timestamp"]).timestamp() - left for s in states
        }
        return {
            "total": stamp["Completed"],
            "claim": stamp["Pending"],
            "hand-off": stamp["Running"] - stamp["Pending"],
            "execute": stamp["Completed"] - stamp["Running"],
        }

    def close(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _below(pid: int, children: dict[int, list[int]]) -> set[int]:
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@contextmanager
def servers(base: Path) -> Iterator[tuple[Server, Server]]:
    with ExitStack() as stack:
        warm = Server(base / "warm", 1)
        stack.callback(warm.close)
        cold = Server(base / "cold", 0)
        stack.callback(cold.close)
        yield warm, cold


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + 120
    while not server.standby_ready():
        if time.monotonic() > deadline:
            raise RuntimeError("no executor ahead became ready")
        time.sleep(0.1)


def papermill(nb: Path, out: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run([PAPERMILL, str(nb), str(out)], capture_output=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode()[-2000:])
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--settle", type=float, default=2.0, help="pause before each run (s)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    samples: dict[str, list[Any]] = {"warm": [], "cold": [], "papermill": []}
    with tempfile.TemporaryDirectory(prefix="nbflow-server-start-") as tmp:
        work = Path(tmp)
        nb = work / "nb10.ipynb"
        write_notebook(nb, 10)
        notebook = json.loads(nb.read_text())
        with servers(work) as (warm, cold):
            ids = {"warm": warm.deploy(notebook), "cold": cold.deploy(notebook)}
            _wait_ready(warm)
            warm.run(ids["warm"])  # warm-ups: first imports, store, caches
            cold.run(ids["cold"])
            papermill(nb, work / "out.ipynb")
            for rep in range(args.reps):
                _wait_ready(warm)
                time.sleep(args.settle)
                samples["warm"].append(warm.run(ids["warm"]))
                time.sleep(args.settle)
                samples["cold"].append(cold.run(ids["cold"]))
                time.sleep(args.settle)
                samples["papermill"].append(papermill(nb, work / "out.ipynb"))
                print(
                    f"rep {rep + 1}: warm {samples['warm'][-1]['total']:.2f} s, "
                    f"cold {samples['cold'][-1]['total']:.2f} s, "
                    f"papermill {samples['papermill'][-1]:.2f} s",
                    flush=True,
                )
    load_after = os.getloadavg()
    pm = statistics.median(samples["papermill"])
    phases = ("claim", "hand-off", "execute")
    median = {
        side: {k: statistics.median(s[k] for s in samples[side]) for k in ("total", *phases)}
        for side in ("warm", "cold")
    }
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"submit → Completed, 10-cell notebook, median of {args.reps} (interleaved); "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"(`uptime`: {uptime})",
        "",
        "| side | wall s | x papermill | target | claim s | hand-off s | execute s |",
        "|---|---|---|---|---|---|---|",
    ]
    for side, label in (("warm", "server, warm pool (1)"), ("cold", "server, pool off")):
        m = median[side]
        lines.append(
            f"| {label} | {m['total']:.2f} | {m['total'] / pm:.2f} | "
            f"{'≤ 0.25' if side == 'warm' else '-'} | {m['claim']:.3f} | "
            f"{m['hand-off']:.3f} | {m['execute']:.3f} |"
        )
    lines.append(f"| papermill CLI | {pm:.2f} | 1.00 | | | | |")
    spread = {
        side: (min(s["total"] for s in samples[side]), max(s["total"] for s in samples[side]))
        for side in ("warm", "cold")
    }
    lines += [
        "",
        f"range: warm {spread['warm'][0]:.2f}-{spread['warm'][1]:.2f} s, cold "
        f"{spread['cold'][0]:.2f}-{spread['cold'][1]:.2f} s, papermill "
        f"{min(samples['papermill']):.2f}-{max(samples['papermill']):.2f} s",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "server_start.md").write_text(text + "\n")
    raw = {"samples": samples, "median": median, "papermill": pm, "uptime": uptime}
    (RESULTS / "server_start.json").write_text(json.dumps(raw, indent=2) + "\n")
    print(f"\nwritten {RESULTS / 'server_start.md'}")


if __name__ == "__main__":
    main()
