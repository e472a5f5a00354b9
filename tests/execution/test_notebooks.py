"""Reading notebooks as flows: the %%flow cell, typed parameters, injection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbflow.exceptions import ParameterError
from nbflow.notebook import document as nbs

FLOW_CELL = '%%flow daily_sales --schedule "0 6 * * *"\nregion = "EU"\nday: str = "2026-01-01"\nn = 3\nrate = 0.5\nverbose = False\nshops = ["a", "b"]\nlimit: int | None = None\nimport os\ncomputed = os.getcwd()\n'


def test_flow_cell_parameters_are_typed_by_their_defaults() -> None:
    nb = nbs.new_notebook(["import math", FLOW_CELL, "%%task t\nx = n * 2"])
    cell = nbs.find_flow_cell(nb)
    assert cell is not None
    assert (cell.index, cell.name) == (1, "daily_sales")
    assert cell.args == ("daily_sales", "--schedule", "0 6 * * *")
    types = {name: p.types for name, p in cell.parameters.items()}
    assert types == {
        "region": ("string",),
        "day": ("string",),
        "n": ("integer",),
        "rate": ("number",),
        "verbose": ("boolean",),
        "shops": ("array",),
        "limit": ("integer", "null"),
    }
    schema = nbs.parameters_schema(cell.parameters)
    assert schema["properties"]["n"] == {"title": "n", "default": 3, "type": "integer"}
    assert schema["properties"]["limit"]["type"] == ["integer", "null"]
    assert schema["additionalProperties"] is False
    json.dumps(schema)  # storable as JSON


def test_flow_name_defaults_to_the_file_stem() -> None:
    nb = nbs.new_notebook(["%%flow --runner subprocess\nx = 1"])
    assert nbs.flow_name(nb, "/tmp/sales report.ipynb") == "sales report"
    assert nbs.flow_name(nbs.new_notebook(["x = 1"]), "a/b.ipynb") == "b"
    assert nbs.flow_name(nbs.new_notebook([FLOW_CELL]), "a/b.ipynb") == "daily_sales"


def test_two_flow_cells_are_an_error() -> None:
    nb = nbs.new_notebook(["%%flow a\nx = 1", "%%flow b\ny = 2"])
    with pytest.raises(nbs.NotebookFormatError, match="cells 0 and 1 are both %%flow"):
        nbs.find_flow_cell(nb)


def test_task_cells() -> None:
    nb = nbs.new_notebook([FLOW_CELL, "%%task a\nx = 1", "y = 2", "\n%%task\nz = 3"])
    assert nbs.task_cells(nb) == [1, 3]


def test_validate_parameters_names_field_value_and_fix() -> None:
    cell = nbs.find_flow_cell(nbs.new_notebook([FLOW_CELL]))
    assert cell is not None
    schema = nbs.parameters_schema(cell.parameters)
    assert nbs.validate_parameters(schema, {"n": 5, "rate": 1, "limit": None}) == {
        "n": 5,
        "rate": 1,
        "limit": None,
    }
    with pytest.raises(ParameterError, match=r"n='five': is not of type integer") as err:
        nbs.validate_parameters(schema, {"n": "five"})
    assert err.value.field == "parameters.n"
    assert "expected integer, as in the flow's default n = 3" in str(err.value)
    with pytest.raises(ParameterError, match=r"unknown parameter of this flow.*are: region"):
        nbs.validate_parameters(schema, {"regoin": "US"})
    with pytest.raises(ParameterError, match="expected integer"):
        nbs.validate_parameters(schema, {"n": True})


def test_coerce_command_line_values_by_declared_type() -> None:
    cell = nbs.find_flow_cell(nbs.new_notebook([FLOW_CELL]))
    assert cell is not None
    schema = nbs.parameters_schema(cell.parameters)
    assert nbs.coerce_parameter(schema, "region", "42") == "42"
    assert nbs.coerce_parameter(schema, "n", "42") == 42
    assert nbs.coerce_parameter(schema, "rate", "2") == 2.0
    assert nbs.coerce_parameter(schema, "verbose", "true") is True
    assert nbs.coerce_parameter(schema, "shops", '["x"]') == ["x"]
    assert nbs.coerce_parameter(schema, "n", "abc") == "abc"  # validate_parameters reports it


def test_injected_cell_follows_the_flow_cell_and_replaces_an_old_one() -> None:
    nb = nbs.new_notebook(["import math", FLOW_CELL, "print(region)"])
    once = nbs.inject_parameters(nb, {"region": "US", "n": 7})
    assert [nbs.cell_source(c).splitlines()[0] for c in once["cells"]][1:3] == [
        FLOW_CELL.splitlines()[0],
        "# Parameters",
    ]
    injected = once["cells"][2]
    assert injected["metadata"]["tags"] == [nbs.INJECTED_TAG]
    assert "region = 'US'\nn = 7\n" in injected["source"]
    twice = nbs.inject_parameters(once, {"n": 8})
    sources = [c["source"] for c in twice["cells"]]
    assert sum(s.startswith("# Parameters") for s in sources) == 1
    assert "n = 8" in sources[2]
    assert nb["cells"][2]["source"] == "print(region)"  # the input is untouched


def test_papermill_parameters_tag_is_honoured_without_a_flow_cell() -> None:
    nb = nbs.new_notebook(["import math", "x = 1", "print(x)"])
    nb["cells"][1]["metadata"]["tags"] = ["parameters"]
    assert nbs.find_parameters_cell(nb) == 1
    out = nbs.inject_parameters(nb, {"x": 2})
    assert out["cells"][2]["source"].startswith("# Parameters\nx = 2")
    no_anchor = nbs.inject_parameters(nbs.new_notebook(["print(1)"]), {"x": 2})
    assert no_anchor["cells"][0]["metadata"]["tags"] == [nbs.INJECTED_TAG]


def test_injection_matches_papermill(tmp_path: Path) -> None:
    """papermill's own parameterize puts its cell where ours goes, with the same values."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = nbs.new_notebook(["import math", "x = 1\ny = 'a'", "print(x)"])
    nb["cells"][1]["metadata"]["tags"] = ["parameters"]
    ours = nbs.inject_parameters(nb, {"x": 2, "y": "b"})
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    theirs = parameterize_notebook(load_notebook_node(str(path)), {"x": 2, "y": "b"})
    assert [c["metadata"].get("tags", []) for c in ours["cells"]] == [
        c.metadata.get("tags", []) for c in theirs.cells
    ]
    ns_ours: dict[str, object] = {}
    ns_theirs: dict[str, object] = {}
    exec(ours["cells"][2]["source"], ns_ours)
    exec(theirs.cells[2].source, ns_theirs)
    assert (ns_ours["x"], ns_ours["y"]) == (ns_theirs["x"], ns_theirs["y"]) == (2, "b")


def test_read_notebook_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(nbs.NotebookFormatError, match="no such notebook file"):
        nbs.read_notebook(tmp_path / "missing.ipynb")
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    with pytest.raises(nbs.NotebookFormatError, match=r"bad.ipynb: not a notebook: invalid JSON"):
        nbs.read_notebook(bad)
    old = tmp_path / "old.ipynb"
    old.write_text(json.dumps({"nbformat": 3, "cells": []}))
    with pytest.raises(nbs.NotebookFormatError, match="nbformat 3 is not supported"):
        nbs.read_notebook(old)
    good = tmp_path / "good.ipynb"
    raw = nbs.new_notebook(["a = 1"])
    raw["cells"][0]["source"] = ["a = 1\n", "b = 2"]
    good.write_text(json.dumps(raw))
    assert nbs.read_notebook(good)["cells"][0]["source"] == "a = 1\nb = 2"


def test_bad_parameters_cell_is_a_clear_error() -> None:
    with pytest.raises(nbs.NotebookFormatError, match="not valid Python"):
        nbs.find_flow_cell(nbs.new_notebook(["%%flow x\nregion = ("]))
