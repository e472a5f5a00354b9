"""``nbflow deploy`` and ``nbflow deployments`` against a live ``nbflow server``."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import nbformat
import pytest

from nbflow.client.http import HTTPClient
from nbflow.schemas import FlowRunFilter
from tests.cli.conftest import NBFLOW, Result
from tests.live_server import LiveServer

FLOW_CELL = '%%flow report\nregion = "EU"\nn: int = 3'


def write_notebook(path: Path, sources: list[str]) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("server")) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[HTTPClient]:
    http = HTTPClient(server.api_url, token=server.token)
    yield http
    http.close()


def run_cli(server: LiveServer, *args: str, cwd: Path | None = None) -> Result:
    proc = subprocess.run(
        [str(NBFLOW), *args],
        cwd=cwd or server.base,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    return write_notebook(tmp_path / "report.ipynb", [FLOW_CELL, "%%task\ny = n * 2"])


def test_deploy_uploads_the_notebook_with_a_cron_schedule(
    server: LiveServer, client: HTTPClient, notebook: Path
) -> None:
    r = run_cli(
        server, "deploy", str(notebook), "--name", "daily", "--cron", "0 6 * * *",
        "--timezone", "Europe/Berlin", "-p", "n=5", "-j", "env.A=1",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "deployed 'daily' of flow 'report'" in r.out
    assert "cron '0 6 * * *' (Europe/Berlin)" in r.out
    assert "next runs:" in r.out
    dep_id = next(line.split()[-1] for line in r.out.splitlines() if "deployment id:" in line)
    dep = client.read_deployment(UUID(dep_id))
    assert dep.parameters == {"n": 5} and dep.job_variables == {"env": {"A": "1"}}
    assert dep.notebook is not None and "%%flow report" in str(dep.notebook["cells"][0]["source"])
    assert dep.schedules[0].cron == "0 6 * * *" and dep.schedules[0].timezone == "Europe/Berlin"
    flow = client.read_flow(dep.flow_id)
    assert flow.name == "report"
    assert flow.parameters_schema["properties"]["n"]["type"] == "integer"

    # Deploying again with the same name updates the deployment (an interval now).
    r = run_cli(server, "deploy", str(notebook), "--name", "daily", "--interval", "1h")
    assert r.code == 0, r.err
    assert f"deployment id: {dep_id}" in r.out and "every 3600s" in r.out
    assert client.read_deployment(dep.id).schedules[0].interval_seconds == 3600


def test_deploy_by_server_path(server: LiveServer, client: HTTPClient) -> None:
    write_notebook(server.root / "by_path.ipynb", ["%%flow by_path\nx = 1", "y = x"])
    r = run_cli(server, "deploy", "by_path.ipynb", "--server-path", "--name", "p", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["notebook_path"] == "by_path.ipynb" and doc["schedules"] == []
    assert client.read_flow(doc["flow_id"]).name == "by_path"
    missing = run_cli(server, "deploy", "nope.ipynb", "--server-path", "--name", "p")
    assert missing.code == 2 and "nope.ipynb" in missing.err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--cron", "61 * * * *"], "--cron '61 * * * *'"),
        (["--cron", "0 6 * * *", "--timezone", "Mars/Base"], "--timezone 'Mars/Base'"),
        (["--runner", "nosuch"], "--runner 'nosuch': is not an installed runner"),
        (["-p", "n=abc"], "-p n"),
        (["-p", "colour=red"], "colour"),
        (["--interval", "soon"], "--interval 'soon'"),
    ],
)
def test_deploy_errors_name_the_option_and_value(
    server: LiveServer, notebook: Path, args: list[str], expected: str
) -> None:
    r = run_cli(server, "deploy", str(notebook), "--name", "bad", *args)
    assert r.code == 2, (r.out, r.err)
    assert r.err.startswith("nbflow: error: ") and expected in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1


def test_deploy_without_a_server_says_how_to_start_one(notebook: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW")}
    env["NBFLOW_HOME"] = str(tmp_path / "home")
    proc = subprocess.run(
        [str(NBFLOW), "deploy", str(notebook), "--name", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "NBFLOW_API_URL is not set" in proc.stderr and "nbflow server" in proc.stderr
    assert "jupyter lab" in proc.stderr


def test_deployments_ls_pause_resume_run_delete(
    server: LiveServer, client: HTTPClient, notebook: Path
) -> None:
    r = run_cli(server, "deploy", str(notebook), "--name", "managed", "--interval", "3600")
    assert r.code == 0, r.err
    ls = run_cli(server, "deployments", "ls")
    assert ls.code == 0, ls.err
    row = next(line for line in ls.out.splitlines() if " managed " in line)
    assert "report" in row and "every 3600s" in row and "active" in row

    assert run_cli(server, "deployments", "pause", "report/managed").code == 0
    dep = next(d for d in client.read_deployments() if d.name == "managed")
    assert dep.paused
    assert "resumed" in run_cli(server, "deployments", "resume", str(dep.id)[:8]).out
    assert not client.read_deployment(dep.id).paused

    run = run_cli(server, "deployments", "run", "managed", "-p", "n=7", "--json")
    assert run.code == 0, run.err
    flow_run = json.loads(run.out)
    assert flow_run["deployment_id"] == str(dep.id) and flow_run["parameters"]["n"] == 7
    bad = run_cli(server, "deployments", "run", "managed", "-p", "n=seven")
    assert bad.code == 2 and "-p n" in bad.err

    assert run_cli(server, "deployments", "delete", "managed").code == 0
    assert all(d.id != dep.id for d in client.read_deployments())
    gone = run_cli(server, "deployments", "pause", "managed")
    assert gone.code == 1 and "deployment managed not found" in gone.err


def test_runs_ls_and_show_against_the_server(
    server: LiveServer, client: HTTPClient, notebook: Path
) -> None:
    r = run_cli(server, "deploy", str(notebook), "--name", "listed")
    assert r.code == 0, r.err
    run = json.loads(
        run_cli(server, "deployments", "run", "report/listed", "-p", "n=4", "--json").out
    )
    ls = run_cli(server, "runs", "ls", "--flow", "report", "--state", "scheduled")
    assert ls.code == 0, ls.err
    assert run["id"][:8] in ls.out and "Scheduled" in ls.out
    show = run_cli(server, "runs", "show", run["id"][:8])
    assert show.code == 0, show.err
    assert f"Flow run {run['id']}" in show.out and "n = 4" in show.out
    version = run_cli(server, "version")
    assert f"server {server.api_url}" in version.out
    assert client.count_flow_runs(FlowRunFilter(flow_names=["report"])) >= 1
