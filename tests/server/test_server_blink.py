"""A run outlives its server: ``kill -9`` of the server mid-run, restarted 20 s later.

A real ``nbflow server`` (services on) dispatches a ~10 s notebook of ``%%task`` cells to
the subprocess runner.  Two seconds after the run is Running the server is killed with
SIGKILL; it is started again on the same port and database 20 s later.  Meanwhile the
executor and the kernel's recorder keep running and retry their writes; the run must end
Completed, with its output notebook, every task run and log line, and no state twice.
On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.databases import BACKENDS, database_url
from tests.live_server import LiveServer
from tests.server.helpers import make_notebook

pytestmark = pytest.mark.slow

CELLS = 5
NOTEBOOK = ["%load_ext nbflow", "import time"] + [
    f"%%task step{i}\ntime.sleep(2)\nprint('step {i} done')" for i in range(CELLS)
]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _poll(what: str, check: Callable[[], Any], deadline: float = 240.0) -> Any:
    end = time.monotonic() + deadline
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


def test_a_run_completes_through_a_kill_9_and_restart_of_its_server(
    tmp_path: Path, db_url: str
) -> None:
    server = LiveServer(tmp_path, services=True, db_url=db_url)
    server.start()
    api = httpx.Client(
        base_url=server.api_url + "/", headers={"Authorization": f"token {server.token}"}
    )
    try:
        flow = api.post("flows", json={"name": "blink"}).json()
        dep = api.post(
            "deployments",
            json={"flow_id": flow["id"], "name": "d", "notebook": make_notebook(NOTEBOOK)},
        ).json()
        run = api.post(f"deployments/{dep['id']}/runs", json={}).json()

        def state() -> str:
            return str(api.get(f"flow_runs/{run['id']}").json()["state"]["type"])

        first = _poll("Running", lambda: state() in {"RUNNING"} | TERMINAL and state())
        assert first == "RUNNING"
        time.sleep(2)
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait()
        time.sleep(20)
        server.start()  # the same port, home, secret and database

        final = _poll("a terminal state", lambda: state() in TERMINAL and state())
        answer = api.get(f"flow_runs/{run['id']}").json()
        assert final == "COMPLETED", answer["state"]

        history = api.get(f"flow_runs/{run['id']}/states").json()["items"]
        types = [s["type"] for s in history]
        assert len({s["id"] for s in history}) == len(history)
        assert types.count("RUNNING") == 1 and types.count("COMPLETED") == 1, types
        assert types[-1] == "COMPLETED", types

        output = api.get(f"flow_runs/{run['id']}/output")
        assert output.status_code == 200, output.text
        printed = [
            "".join(o.get("text", "")) for c in output.json()["cells"] for o in c.get("outputs", [])
        ]
        # The kernel also says that it waited for the server; every step ran exactly once.
        assert [p for p in printed if p.startswith("step")] == [
            f"step {i} done\n" for i in range(CELLS)
        ]

        tasks = api.get("task_runs", params={"flow_run_ids": run["id"]}).json()["items"]
        assert sorted((t["name"], t["state"]["type"]) for t in tasks) == [
            (f"step{i}", "COMPLETED") for i in range(CELLS)
        ]
        for task in tasks:
            task_states = api.get(f"task_runs/{task['id']}/states").json()["items"]
            assert len({s["id"] for s in task_states}) == len(task_states)
            assert [s["type"] for s in task_states].count("COMPLETED") == 1

        logs = api.get("logs", params={"flow_run_id": run["id"], "limit": 1000}).json()["logs"]
        messages = "\n".join(entry["message"] for entry in logs)
        for i in range(CELLS):
            assert f"step {i} done" in messages
    finally:
        api.close()
        server.stop()
