"""``nbflow runs retry RUN [--from-failed]``: repair a failed notebook run from its failed cell.

The runs are real: ``nbflow run`` executes the notebook in a kernel (subprocess runner,
embedded store).  The upstream ``%%task`` cells append to counter files, so a repair that
restored them instead of running them leaves the files as the failed run left them.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from tests.cli.conftest import Result, Runner
from tests.cli.test_deploy import write_notebook

#: Fails at ``report`` while ``fail`` is true; ``extract`` and ``double`` count their runs.
REPAIRABLE = [
    "%%flow repair_demo\nfail: bool = True",
    "import pathlib",
    "%%task extract\n"
    "pathlib.Path('extract.count').open('a').write('x')\n"
    "rows = [1, 2, 3]\n"
    "print('extracted', len(rows), 'rows')",
    "%%task double\n"
    "pathlib.Path('double.count').open('a').write('x')\n"
    "doubled = [r * 2 for r in rows]\n"
    "doubled",
    "%%task report\n"
    "if fail:\n"
    "    raise RuntimeError('asked to fail')\n"
    "total = sum(doubled)\n"
    "print('total', total)",
]


def run_id_of(result: Result) -> str:
    match = re.search(r"run id:\s+(\S+)", result.out)
    assert match, result.out + result.err
    return match.group(1)


def output_of(result: Result) -> dict[str, Any]:
    match = re.search(r"output:\s+(\S+)", result.out)
    assert match, result.out + result.err
    return json.loads(Path(match.group(1)).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def cell_text(nb: dict[str, Any], start: str) -> str:
    """Return the text outputs of the code cell whose source starts with ``start``."""
    [cell] = [c for c in nb["cells"] if "".join(c["source"]).startswith(start)]
    parts: list[str] = []
    for out in cell["outputs"]:
        if out["output_type"] == "stream":
            parts.append("".join(out["text"]))
        elif "data" in out:
            parts.append("".join(out["data"].get("text/plain", "")))
    return "".join(parts)


def test_repair_runs_only_from_the_failed_cell(nbflow: Runner, tmp_path: Path) -> None:
    write_notebook(tmp_path / "repair.ipynb", REPAIRABLE)
    failed = nbflow("run", "repair.ipynb")
    assert failed.code == 1, failed.out + failed.err
    old = run_id_of(failed)
    assert (tmp_path / "extract.count").read_text() == "x"
    assert (tmp_path / "double.count").read_text() == "x"

    repaired = nbflow("runs", "retry", old[:8], "--from-failed", "-p", "fail=false")
    assert repaired.code == 0, repaired.out + repaired.err
    new = run_id_of(repaired)
    assert new != old
    assert "Completed" in repaired.out
    # The upstream task cells were restored, not run again.
    assert (tmp_path / "extract.count").read_text() == "x"
    assert (tmp_path / "double.count").read_text() == "x"

    nb = output_of(repaired)
    assert "extracted 3 rows" in cell_text(nb, "%%task extract")
    assert "[2, 4, 6]" in cell_text(nb, "%%task double")
    assert "total 12" in cell_text(nb, "%%task report")

    shown = nbflow("runs", "show", new, "--json").json()
    assert shown["retry_of"] == old
    tasks = {t["name"]: t for t in shown["task_runs"]}
    assert tasks["extract"]["state"]["name"] == tasks["double"]["state"]["name"] == "Cached"
    assert tasks["extract"]["state"]["data"]["source_flow_run_id"] == old
    assert tasks["report"]["state"]["name"] == "Completed"

    text = nbflow("runs", "show", old).out
    assert f"retried by:  {new}" in text
    assert f"retry of:    {old}" in nbflow("runs", "show", new).out


def test_a_plain_retry_runs_every_cell_again(nbflow: Runner, tmp_path: Path) -> None:
    write_notebook(tmp_path / "repair.ipynb", REPAIRABLE)
    old = run_id_of(nbflow("run", "repair.ipynb"))
    again = nbflow("runs", "retry", old, "-p", "fail=false")
    assert again.code == 0, again.out + again.err
    assert (tmp_path / "extract.count").read_text() == "xx"
    assert (tmp_path / "double.count").read_text() == "xx"


def test_a_changed_upstream_cell_runs_again(nbflow: Runner, tmp_path: Path) -> None:
    """Editing ``double`` (code changed) re-executes it; ``extract`` is still restored."""
    path = write_notebook(tmp_path / "repair.ipynb", REPAIRABLE)
    old = run_id_of(nbflow("run", "repair.ipynb"))
    edited = list(REPAIRABLE)
    edited[3] = edited[3].replace("r * 2", "r * 10").replace("[1, 2, 3]", "[1, 2, 3]")
    write_notebook(path, edited)
    repaired = nbflow("runs", "retry", old, "--from-failed", "-p", "fail=false")
    assert repaired.code == 0, repaired.out + repaired.err
    assert (tmp_path / "extract.count").read_text() == "x"
    assert (tmp_path / "double.count").read_text() == "xx"
    assert "total 60" in cell_text(output_of(repaired), "%%task report")


def test_retry_refuses_what_cannot_be_repaired(nbflow: Runner, tmp_path: Path) -> None:
    write_notebook(tmp_path / "repair.ipynb", REPAIRABLE)
    ok = nbflow("run", "repair.ipynb", "-p", "fail=false")
    assert ok.code == 0, ok.out + ok.err
    refused = nbflow("runs", "retry", run_id_of(ok), "--from-failed")
    assert refused.code != 0
    assert "from_failed" in refused.err and "Completed" in refused.err
    bad = nbflow("runs", "retry", run_id_of(ok), "-p", "fail=maybe")
    assert bad.code != 0 and "fail" in bad.err


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "repair.ipynb"


def test_the_repair_example(nbflow: Runner, tmp_path: Path) -> None:
    """examples/repair.ipynb fails at ``report``; the repair completes it, extract ran once."""
    shutil.copy(EXAMPLE, tmp_path / "repair.ipynb")
    failed = nbflow("run", "repair.ipynb")
    assert failed.code == 1 and "the report template is broken" in failed.out + failed.err
    repaired = nbflow("runs", "retry", run_id_of(failed), "--from-failed", "-p", "broken=false")
    assert repaired.code == 0, repaired.out + repaired.err
    assert "2 task cells restored from flow run" in repaired.out
    out = tmp_path / "repair_output"
    assert (out / "extract.runs").read_text() == "ran\n"
    assert (out / "report.txt").read_text() == "EU: 295\nUS: 520"
    nb = output_of(repaired)
    assert "extracted 6 rows" in cell_text(nb, "%%task extract")
    assert "'EU': 295" in cell_text(nb, "%%task totals")
