"""``nbflow runs ls``, ``show`` and ``output`` over runs made by ``nbflow run``.

``runs output`` is tested on the embedded store and through a live server.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from nbflow.client.embedded import EmbeddedClient
from nbflow.client.http import HTTPClient
from nbflow.schemas import Flow, FlowRun, FlowRunCreate
from nbflow.states import Completed, Pending, Running
from tests.cli.conftest import Result
from tests.cli.test_deploy import run_cli, write_notebook
from tests.live_server import LiveServer

Runner = Callable[..., Any]
FlowFile = Callable[[str, str], Path]

FLOWS = """
    from nbflow import flow, task

    @task
    def one() -> int:
        return 1

    @flow
    def good(k: int = 0) -> int:
        return one() + k

    @flow
    def bad() -> None:
        raise RuntimeError("bad on purpose")
"""


def _seed(nbflow: Runner, flow_file: FlowFile) -> dict[str, list[str]]:
    path = flow_file("flows.py", FLOWS)
    ids: dict[str, list[str]] = {"good": [], "bad": []}
    for name, params in (("good", ["-p", "k=1"]), ("bad", []), ("good", ["-p", "k=2"])):
        result = nbflow("run", f"{path}:{name}", "-q", *params)
        match = re.search(r"run id:\s+(\S+)", result.out)
        assert match, result.out + result.err
        ids[name].append(match.group(1))
    return ids


def test_ls_table_filters_and_limit(nbflow: Runner, flow_file: FlowFile) -> None:
    ids = _seed(nbflow, flow_file)
    table = nbflow("runs", "ls")
    assert table.code == 0
    lines = table.out.strip().splitlines()
    assert lines[0].split() == ["ID", "NAME", "FLOW", "STATE", "START", "DURATION"]
    assert len(lines) == 4
    # Newest first.
    assert lines[1].startswith(ids["good"][1][:8])
    assert lines[2].startswith(ids["bad"][0][:8]) and " Failed " in lines[2]

    only_good = nbflow("runs", "ls", "--flow", "good", "--json").json()
    assert {r["id"] for r in only_good} == set(ids["good"])
    failed = nbflow("runs", "ls", "--state", "FAILED", "--json").json()
    assert [r["id"] for r in failed] == ids["bad"]
    by_name = nbflow("runs", "ls", "--state", "completed", "--state", "failed", "--json").json()
    assert len(by_name) == 3
    limited = nbflow("runs", "ls", "--limit", "1", "--json").json()
    assert [r["id"] for r in limited] == [ids["good"][1]]


def test_ls_on_an_empty_store(nbflow: Runner) -> None:
    result = nbflow("runs", "ls")
    assert result.code == 0
    assert result.out == ""
    assert "no flow runs in sqlite:///" in result.err


def test_show_details(nbflow: Runner, flow_file: FlowFile) -> None:
    ids = _seed(nbflow, flow_file)
    result = nbflow("runs", "show", ids["good"][0][:8], "--logs")
    assert result.code == 0, result.err
    out = result.out
    assert out.startswith(f"Flow run {ids['good'][0]}\n")
    assert re.search(r"state:\s+Completed", out)
    assert "k = 1" in out
    assert re.search(r"Running\n.*Completed", out)
    assert re.search(r"one-0\s+Completed", out)
    assert "0 cache hit(s), 0 task run(s) retried" in out

    bad = nbflow("runs", "show", ids["bad"][0])
    assert re.search(r"state:\s+Failed", bad.out)
    assert "bad on purpose" in bad.out


def test_show_unknown_and_malformed_ids(nbflow: Runner, flow_file: FlowFile) -> None:
    _seed(nbflow, flow_file)
    missing = nbflow("runs", "show", "00000000-0000-0000-0000-000000000000")
    assert missing.code == 1
    assert missing.err == (
        "nbflow: error: flow run 00000000-0000-0000-0000-000000000000 not found\n"
    )
    assert nbflow("runs", "show", "zzz").code == 2
    assert nbflow("runs", "show", "-").code in (1, 2)


# -- nbflow runs output ----------------------------------------------------------------
TINY = ["%%flow tiny\nn: int = 2", "%%task double\ny = n * 2\nprint('y is', y)"]


def _notebook_run(run: Callable[..., Any], where: Path) -> tuple[str, str, Path]:
    """Run a two-cell notebook with ``nbflow run``; return its run id, name and output path."""
    write_notebook(where / "tiny.ipynb", TINY)
    result = run("run", "tiny.ipynb", "-p", "n=5", cwd=where)
    assert result.code == 0, result.out + result.err
    run_id = re.search(r"run id:\s+(\S+)", result.out)
    output = re.search(r"output:\s+(\S+)", result.out)
    assert run_id and output, result.out
    shown = run("runs", "show", run_id.group(1), "--json", cwd=where)
    return run_id.group(1), shown.json()["name"], Path(output.group(1))


def _printed(notebook: dict[str, Any]) -> list[str]:
    return [
        "".join(o.get("text", ""))
        for cell in notebook["cells"]
        for o in cell.get("outputs", [])
        if o.get("output_type") == "stream"
    ]


def test_output_from_the_embedded_store(nbflow: Runner, nbflow_home: Path, tmp_path: Path) -> None:
    run_id, name, stored = _notebook_run(nbflow, tmp_path)
    show = nbflow("runs", "show", run_id)
    assert f"output:      {stored}\n" in show.out  # a readable path is named as is

    fetched = tmp_path / "fetched"
    fetched.mkdir()
    result = nbflow("runs", "output", run_id[:8], cwd=fetched)
    assert result.code == 0, result.err
    target = fetched / f"{name}.ipynb"
    assert f"wrote {target.name}" in result.err
    notebook = json.loads(target.read_text())
    assert "y is 10\n" in _printed(notebook)

    again = nbflow("runs", "output", run_id, cwd=fetched)
    assert again.code == 1
    assert f"{target.name} exists" in again.err and "--force" in again.err
    assert nbflow("runs", "output", run_id, "--force", cwd=fetched).code == 0

    chosen = nbflow("runs", "output", run_id, "-o", "sub/report.ipynb", cwd=fetched)
    assert chosen.code == 1 and "sub" in chosen.err  # no such folder: named, nothing written
    chosen = nbflow("runs", "output", run_id, "-o", str(fetched / "report.ipynb"))
    assert chosen.code == 0, chosen.err
    assert json.loads((fetched / "report.ipynb").read_text()) == notebook

    to_stdout = nbflow("runs", "output", run_id, "-o", "-")
    assert to_stdout.code == 0 and json.loads(to_stdout.out) == notebook

    stored.unlink()  # the stored file is gone: say where it was
    lost = nbflow("runs", "output", run_id, "-o", "-")
    assert lost.code == 1 and str(stored) in lost.err and lost.out == ""
    assert "missing" in nbflow("runs", "show", run_id).out


def test_output_errors_name_the_reason(
    nbflow: Runner, flow_file: FlowFile, nbflow_home: Path
) -> None:
    ids = _seed(nbflow, flow_file)
    python_run = nbflow("runs", "output", ids["good"][0], "-o", "-")
    assert python_run.code == 1
    assert "has no output notebook" in python_run.err and "Python flow" in python_run.err

    missing = nbflow("runs", "output", "00000000-0000-0000-0000-000000000000")
    assert missing.code == 1 and "not found" in missing.err

    store = EmbeddedClient.from_url(f"sqlite:///{nbflow_home / 'nbflow.db'}")
    try:
        flow = store.create_flow(Flow(name="slow"))
        running = store.create_flow_run(FlowRunCreate(flow_id=flow.id, mode="batch"))
        store.set_flow_run_state(running.id, Pending())
        store.set_flow_run_state(running.id, Running())
    finally:
        store.close()
    busy = nbflow("runs", "output", str(running.id))
    assert busy.code == 1
    assert "still Running" in busy.err and "nbflow runs show" in busy.err


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that dispatches runs itself (subprocess runner), as it does containers."""
    interval = [
        "--set",
        "NbflowApp.dispatch_interval=0.2",
        "--set",
        "NbflowApp.monitor_interval=0.2",
    ]
    base = tmp_path_factory.mktemp("runs-server")
    with LiveServer(base, services=True, extra_args=interval) as live:
        yield live


def _wait_terminal(client: HTTPClient, run_id: str, timeout: float = 240) -> FlowRun:
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(UUID(run_id))
        if run.state is not None and run.state.is_terminal:
            return run
        assert time.monotonic() < deadline, f"run stayed {run.state}"
        time.sleep(0.3)


def test_output_from_the_server(server: LiveServer, tmp_path: Path) -> None:
    def run(*args: str) -> Result:
        return run_cli(server, *args, cwd=tmp_path)

    client = HTTPClient(server.api_url, token=server.token)
    try:
        write_notebook(tmp_path / "tiny.ipynb", TINY)
        assert run("deploy", "tiny.ipynb", "--name", "tiny-d").code == 0
        started = run("deployments", "run", "tiny-d", "-p", "n=5", "--json")
        assert started.code == 0, started.err
        run_id, name = started.json()["id"], started.json()["name"]
        done = _wait_terminal(client, run_id)
        assert done.state is not None and done.state.name == "Completed", done.state
        assert done.output_path
        # The run sent its notebook to the server.  Where it wrote it (a container's
        # disk) is gone now: `runs show` points at the stored copy, `runs output` gets it.
        Path(done.output_path).unlink(missing_ok=True)
        show = run("runs", "show", run_id)
        assert show.code == 0, show.err
        assert f"output:      stored with the run — nbflow runs output {run_id[:8]}" in show.out
        assert done.output_path in show.out

        result = run("runs", "output", run_id[:8])
        assert result.code == 0, result.err
        notebook = json.loads((tmp_path / f"{name}.ipynb").read_text())
        assert "y is 10\n" in _printed(notebook)
        assert json.loads(run("runs", "output", run_id, "-o", "-").out) == notebook

        # Created claimed (Pending): a Scheduled batch run would be the server's dispatcher's
        # to claim, within milliseconds, before these proposals.
        flow = client.create_flow(Flow(name="slow-remote"))
        running = client.create_flow_run(
            FlowRunCreate(flow_id=flow.id, mode="batch", state=Pending())
        )
        client.set_flow_run_state(running.id, Running())
        finished = client.create_flow_run(
            FlowRunCreate(flow_id=flow.id, mode="batch", state=Pending())
        )
        for state in (Running(), Completed()):
            client.set_flow_run_state(finished.id, state)
    finally:
        client.close()
    busy = run("runs", "output", str(running.id))
    assert busy.code == 1 and "still Running" in busy.err
    empty = run("runs", "output", str(finished.id))
    assert empty.code == 1 and "has no output notebook" in empty.err
    missing = run("runs", "output", "00000000-0000-0000-0000-000000000000")
    assert missing.code == 1 and "not found" in missing.err
