"""``nbflow runs diff A B``: one notebook run twice with other parameters, compared.

The runs are real (``nbflow run`` executes the notebook in a kernel); their outputs differ
in a printed line, a pandas table and a PNG image, and agree in one cell.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.cli.conftest import NBFLOW, Result
from tests.cli.test_deploy import run_cli, write_notebook
from tests.live_server import LiveServer

Runner = Callable[..., Result]

PNG = """\
import base64, struct, zlib
from IPython.display import Image, display

def png(width, height):
    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
    rows = b"".join(b"\\x00" + b"\\xff\\x00\\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

display(Image(data=png(n, 2)))
"""

#: A report whose outputs depend on ``n`` and ``label`` -- except the last cell's.
REPORT = [
    "%%flow report\nn: int = 2\nlabel: str = 'a'",
    "%%task double\ny = n * 2\nprint('y is', y)\nprint('label', label)\nprint('steady')",
    "import pandas as pd\npd.DataFrame({'n': [n], 'y': [y]})",
    PNG,
    "%%task constant\nprint('unchanged')",
]

PYTHON_FLOW = """
from nbflow import flow

@flow
def plain(k: int = 0) -> int:
    return k
"""


def _run_id(result: Result) -> str:
    match = re.search(r"run id:\s+(\S+)", result.out)
    assert result.code == 0 and match, result.out + result.err
    return match.group(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two runs of the report (n=2; n=3 with label b) and a Python flow run (no notebook)."""
    base = tmp_path_factory.mktemp("diff")
    home = base / "server-home"  # where a LiveServer under ``base`` keeps its store
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW_")}
    env["NBFLOW_HOME"] = str(home)

    def nbflow(*args: str) -> Result:
        proc = subprocess.run(
            [str(NBFLOW), *args], cwd=base, env=env, capture_output=True, text=True, timeout=180
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    write_notebook(base / "report.ipynb", REPORT)
    (base / "plain.py").write_text(PYTHON_FLOW)
    return {
        "nbflow": nbflow,
        "base": base,
        "home": home,
        "a": _run_id(nbflow("run", "report.ipynb", "-p", "n=2")),
        "b": _run_id(nbflow("run", "report.ipynb", "-p", "n=3", "-p", "label=b")),
        "python": _run_id(nbflow("run", "plain.py:plain", "-q", "-p", "k=1")),
    }


def test_diff_json_names_every_difference(runs: dict[str, Any]) -> None:
    result = runs["nbflow"]("runs", "diff", runs["a"], runs["b"], "--json")
    assert result.code == 0, result.err
    diff = result.json()
    assert diff["a"]["id"] == runs["a"] and diff["b"]["id"] == runs["b"]
    assert diff["parameters"] == {
        "added": {},
        "removed": {},
        "changed": {"label": {"a": "a", "b": "b"}, "n": {"a": 2, "b": 3}},
        "same": [],
    }
    assert diff["state"] == {"a": "Completed", "b": "Completed", "changed": False}
    assert diff["duration"]["delta"] == pytest.approx(diff["duration"]["b"] - diff["duration"]["a"])
    tasks = {t["name"]: t for t in diff["task_runs"]}
    assert set(tasks) == {"double", "constant"}
    assert tasks["double"]["a"]["state"] == tasks["double"]["b"]["state"] == "Completed"
    assert not tasks["double"]["state_changed"] and tasks["double"]["delta"] is not None

    assert diff["outputs_available"] is True and diff["outputs_note"] is None
    cells = {c["label"]: c for c in diff["cells"]}
    double = cells["double"]
    assert double["status"] == "changed" and not double["source_changed"]
    assert "-y is 4" in double["text_diff"] and "+y is 6" in double["text_diff"]
    assert "-label a" in double["text_diff"] and "+label b" in double["text_diff"]
    assert " steady" in double["text_diff"]  # context line: unchanged output

    table_cell = next(c for c in diff["cells"] if c["label"].startswith("import pandas"))
    assert table_cell["status"] == "changed" and table_cell["text_diff"] == []
    [table] = table_cell["tables"]
    assert table["kind"] == "table" and "<table" in table["a"] and "<td>4</td>" in table["a"]
    assert "<td>6</td>" in table["b"] and "4" in table["a_text"] and "6" in table["b_text"]

    image_cell = next(c for c in diff["cells"] if c["label"].startswith("import base64"))
    [image] = image_cell["images"]
    assert (image["a"]["width"], image["a"]["height"]) == (2, 2)
    assert (image["b"]["width"], image["b"]["height"]) == (3, 2)
    assert image["a"]["sha256"] != image["b"]["sha256"] and image["a"]["mime"] == "image/png"

    assert cells["constant"]["status"] == "same" and cells["constant"]["text_diff"] == []
    assert cells["report"]["status"] == "same"  # the flow cell's run widget is not compared


def test_diff_text_is_readable(runs: dict[str, Any]) -> None:
    result = runs["nbflow"]("runs", "diff", runs["a"][:8], runs["b"][:8])
    assert result.code == 0, result.err
    out = result.out
    assert f"A  {runs['a']}" in out and f"B  {runs['b']}" in out
    assert re.search(r"n\s+2 → 3", out) and re.search(r"label\s+'a' → 'b'", out)
    assert re.search(r"double\s+Completed\s+Completed", out)
    assert "-y is 4" in out and "+y is 6" in out
    assert "table changed" in out and "image changed" in out
    assert "2x2 px" in out and "3x2 px" in out
    assert "constant" not in out.split("Cells")[1]  # unchanged cells are counted, not shown
    assert re.search(r"\d+ cell\(s\) unchanged", out)


def test_a_run_without_output_is_still_compared(runs: dict[str, Any]) -> None:
    result = runs["nbflow"]("runs", "diff", runs["a"], runs["python"], "--json")
    assert result.code == 0, result.err
    diff = result.json()
    assert diff["outputs_available"] is False and diff["cells"] == []
    assert runs["python"] in diff["outputs_note"] and "no output notebook" in diff["outputs_note"]
    assert diff["b"]["output"] == "unavailable" and diff["a"]["output"] == "available"
    assert diff["parameters"]["added"] == {"k": 1}
    assert set(diff["parameters"]["removed"]) == {"label", "n"}
    text = runs["nbflow"]("runs", "diff", runs["a"], runs["python"])
    assert text.code == 0 and "cell outputs unavailable" in text.out


def test_an_unknown_run_is_named(runs: dict[str, Any]) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    result = runs["nbflow"]("runs", "diff", runs["a"], missing)
    assert result.code == 1 and result.out == ""
    assert f"flow run {missing} not found" in result.err
    bad = runs["nbflow"]("runs", "diff", "xyz!", runs["a"])
    assert bad.code == 2 and "'xyz!' is not a flow run id" in bad.err


def test_through_a_server_the_comparison_is_the_same(runs: dict[str, Any]) -> None:
    """The HTTP client (``NBFLOW_API_URL``) reads runs and outputs from the server."""
    embedded = runs["nbflow"]("runs", "diff", runs["a"], runs["b"], "--json").json()
    store = f"sqlite:///{runs['home'] / 'nbflow.db'}"
    with LiveServer(runs["base"], db_url=store) as server:
        remote = run_cli(server, "runs", "diff", runs["a"][:8], runs["b"], "--json")
        assert remote.code == 0, remote.err
        assert remote.json() == embedded
        api = httpx.get(
            f"{server.api_url}/flow_runs/{runs['a']}/diff",
            params={"other": runs["b"]},
            headers={"Authorization": f"token {server.token}"},
        )
        assert api.status_code == 200 and api.json() == embedded
        missing = run_cli(
            server, "runs", "diff", runs["a"], "0" * 8 + "-0000-0000-0000-" + "0" * 12
        )
        assert missing.code == 1 and "not found" in missing.err
