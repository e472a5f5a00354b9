"""``GET /flow_runs/{a}/diff?other={b}``: the comparison ``nbflow runs diff`` prints, as JSON.

The runs are real: ``nbflow run`` executes the report notebook of the CLI test twice (other
parameters) into a store the server then opens, with the output notebooks where the
server may read them (``$NBFLOW_HOME/outputs``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbflow.settings import reload_settings
from tests.cli.conftest import NBFLOW
from tests.cli.test_deploy import write_notebook
from tests.cli.test_runs_diff import PYTHON_FLOW, REPORT
from tests.server.helpers import Api


def _nbflow(base: Path, home: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW_")}
    env["NBFLOW_HOME"] = str(home)
    proc = subprocess.run(
        [str(NBFLOW), *args], cwd=base, env=env, capture_output=True, text=True, timeout=180
    )
    match = re.search(r"run id:\s+(\S+)", proc.stdout)
    assert proc.returncode == 0 and match, proc.stdout + proc.stderr
    return match.group(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("diff-api")
    home = base / "home"
    home.mkdir()
    write_notebook(base / "report.ipynb", REPORT)
    (base / "plain.py").write_text(PYTHON_FLOW)
    return {
        "home": home,
        "a": _nbflow(base, home, "run", "report.ipynb", "-p", "n=2"),
        "b": _nbflow(base, home, "run", "report.ipynb", "-p", "n=3", "-p", "label=b"),
        "python": _nbflow(base, home, "run", "plain.py:plain", "-q"),
    }


@pytest.fixture
def jp_server_config(
    runs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """A server on the runs' store, whose settings name the runs' home (outputs allowed)."""
    monkeypatch.setenv("NBFLOW_HOME", str(runs["home"]))
    for name in ("NBFLOW_API_URL", "NBFLOW_API_TOKEN", "NBFLOW_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    reload_settings()
    yield {
        "ServerApp": {"jpserver_extensions": {"nbflow_server": True}},
        "NbflowApp": {
            "db_url": f"sqlite:///{runs['home'] / 'nbflow.db'}",
            "secret_file": str(tmp_path / "secret"),
            "services_enabled": False,
        },
    }
    monkeypatch.undo()
    reload_settings()


async def test_the_route_answers_the_comparison(api: Api, runs: dict[str, Any]) -> None:
    status, diff = await api("GET", "flow_runs", runs["a"], "diff", params={"other": runs["b"]})
    assert status == 200, diff
    assert diff["a"]["id"] == runs["a"] and diff["b"]["id"] == runs["b"]
    assert diff["parameters"]["changed"] == {"label": {"a": "a", "b": "b"}, "n": {"a": 2, "b": 3}}
    assert diff["state"]["changed"] is False and diff["outputs_available"] is True
    assert {t["name"] for t in diff["task_runs"]} == {"double", "constant"}
    cells = {c["label"]: c for c in diff["cells"]}
    assert "+y is 6" in cells["double"]["text_diff"]
    changed_tables = [t for c in diff["cells"] for t in c["tables"]]
    assert [t["kind"] for t in changed_tables] == ["table"]
    [image] = [i for c in diff["cells"] for i in c["images"]]
    assert (image["a"]["width"], image["b"]["width"]) == (2, 3)


async def test_a_run_without_output_and_unknown_runs(api: Api, runs: dict[str, Any]) -> None:
    status, diff = await api(
        "GET", "flow_runs", runs["python"], "diff", params={"other": runs["a"]}
    )
    assert status == 200, diff
    assert diff["outputs_available"] is False and diff["cells"] == []
    assert f"flow run {runs['python']} has no output notebook" in diff["outputs_note"]
    assert diff["a"]["output"] == "unavailable" and diff["b"]["output"] == "available"

    missing = "00000000-0000-0000-0000-000000000000"
    status, body = await api("GET", "flow_runs", runs["a"], "diff", params={"other": missing})
    assert status == 404 and missing in body["message"]
    status, body = await api("GET", "flow_runs", missing, "diff", params={"other": runs["a"]})
    assert status == 404 and missing in body["message"]
    status, body = await api("GET", "flow_runs", runs["a"], "diff", params={"other": "nope"})
    assert status == 400 and body["errors"][0]["field"] == "query.other"
    status, body = await api("GET", "flow_runs", runs["a"], "diff")
    assert status == 400 and body["errors"][0]["field"] == "query.other"
