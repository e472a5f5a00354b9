"""``-p NAME=VALUE`` on the command line: a name that is not an identifier never gets in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbflow.notebook import document as nbs
from tests.cli.conftest import Runner


@pytest.mark.parametrize("name", ["x;import os", "class", "a b"])
def test_a_notebook_run_refuses_a_bad_parameter_name(
    nbflow: Runner, tmp_path: Path, name: str
) -> None:
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nbs.new_notebook(["%%flow nb\nx = 1", "print(x)"])))
    result = nbflow("run", str(path), "-p", f"{name}=1")
    assert result.code == 2, result.err
    assert "is not a valid parameter name" in result.err
    assert nbflow("runs", "ls", "--json").json() == []
