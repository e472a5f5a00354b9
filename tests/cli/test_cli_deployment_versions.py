"""``nbflow deploy`` of an existing deployment (a new version, its changes printed) and
``nbflow deployments show|versions|diff`` against a live ``nbflow server``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_deploy import FLOW_CELL, run_cli, write_notebook
from tests.live_server import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("server")) as live:
        yield live


def test_redeploy_is_a_version_and_the_cli_shows_versions_and_code_diffs(
    server: LiveServer, tmp_path: Path
) -> None:
    path = write_notebook(tmp_path / "report.ipynb", [FLOW_CELL, "%%task\ny = n * 2"])
    r = run_cli(server, "deploy", str(path), "--name", "versioned", "--cron", "0 6 * * *")
    assert r.code == 0, r.err
    assert "version:" not in r.out  # created: nothing to compare with

    write_notebook(path, [FLOW_CELL, "%%task\ny = n * 3"])
    r = run_cli(
        server, "deploy", str(path), "--name", "versioned", "--cron", "0 6 * * *", "-p", "n=4"
    )
    assert r.code == 0, r.err
    assert "version:       2 (was 1), changed:" in r.out
    assert 'parameters: {} -> {"n": 4}' in r.out
    assert "notebook snapshot: new snapshot (2 code cells" in r.out

    r = run_cli(
        server, "deploy", str(path), "--name", "versioned", "--cron", "0 6 * * *", "-p", "n=4"
    )
    assert r.code == 0 and "version:       2 (nothing changed)" in r.out, r.out

    r = run_cli(server, "deployments", "show", "versioned")
    assert r.code == 0, r.err
    assert "version:       2 (updated" in r.out
    assert "run mode:      snapshot (runs the notebook as deployed)" in r.out
    assert "kernel:        the notebook's own kernelspec" in r.out

    r = run_cli(server, "deployments", "versions", "versioned", "--json")
    assert r.code == 0, r.err
    listed = json.loads(r.out)
    assert [(v["version"], v["author"], v["summary"]) for v in listed] == [
        (2, "api", "changed parameters, notebook snapshot"),
        (1, "api", "created"),
    ]
    r = run_cli(server, "deployments", "versions", "versioned")
    assert r.out.splitlines()[0].split() == ["VERSION", "CREATED", "AUTHOR", "SUMMARY", "NOTEBOOK"]

    r = run_cli(server, "deployments", "diff", "versioned", "2")
    assert r.code == 0, r.err
    assert "version 1 -> 2" in r.out
    assert "-y = n * 2\n+y = n * 3\n" in r.out
    r = run_cli(server, "deployments", "diff", "versioned", "2", "1")
    assert "version 2 -> 1" in r.out and "-y = n * 3\n+y = n * 2\n" in r.out
    r = run_cli(server, "deployments", "diff", "versioned", "7")
    assert r.code != 0 and "not found" in r.err
