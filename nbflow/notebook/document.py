"""Read a notebook as a flow: its ``%%flow`` cell, typed parameters and injected parameters.

A notebook is handled as plain nbformat-v4 JSON (dicts and lists), so reading one does not
import ``nbformat`` (whose ``jsonschema`` import costs over a second): the CLI stays quick
and only the executing process pays for papermill.

The ``%%flow`` cell is the parameters cell: its body's top-level literal assignments are
the flow's parameters, typed by their defaults (or annotations).  Without a ``%%flow``
cell, a cell tagged ``parameters`` (papermill's convention) plays that role.  Injected
parameters go in a new cell tagged ``injected-parameters`` right after it, exactly where
papermill would put them, replacing any earlier injected cell.
"""

from __future__ import annotations

import ast
import copy
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbflow import parameters as _parameters
from nbflow.exceptions import NbflowError, ParameterError

__all__ = [
    "FLOW_MAGIC",
    "INJECTED_TAG",
    "PARAMETERS_TAG",
    "TASK_MAGIC",
    "FlowCell",
    "NotebookFormatError",
    "Parameter",
    "cell_source",
    "coerce_parameter",
    "find_flow_cell",
    "find_parameters_cell",
    "flow_name",
    "inject_parameters",
    "load_notebook",
    "new_notebook",
    "notebook_parameters",
    "notebook_parameters_schema",
    "parameters_schema",
    "parse_parameters",
    "read_notebook",
    "task_cells",
    "validate_parameters",
]

FLOW_MAGIC = "%%flow"
TASK_MAGIC = "%%task"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"

#: JSON schema type of each Python type a parameter default can have.
_JSON_TYPES: dict[type, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    tuple: "array",
    dict: "object",
    type(None): "null",
}
_ANNOTATION_TYPES: dict[str, str] = {
    "bool": "boolean",
    "int": "integer",
    "float": "number",
    "str": "string",
    "list": "array",
    "tuple": "array",
    "dict": "object",
    "None": "null",
}


class NotebookFormatError(NbflowError, ValueError):
    """A file that is not a readable nbformat-4 notebook, or a malformed ``%%flow`` cell."""

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Parameter:
    """One flow parameter: its name, default and JSON schema type(s)."""

    name: str
    default: Any
    #: JSON schema types ("integer", "string", ...); empty means any type.
    types: tuple[str, ...]

    def schema(self) -> dict[str, Any]:
        """Return this parameter's JSON schema property."""
        prop: dict[str, Any] = {"title": self.name, "default": _jsonable(self.default)}
        if len(self.types) == 1:
            prop["type"] = self.types[0]
        elif self.types:
            prop["type"] = list(self.types)
        return prop


@dataclass(frozen=True)
class FlowCell:
    """The ``%%flow`` cell of a notebook."""

    index: int
    #: The flow name given on the magic line, None when the line names none.
    name: str | None
    #: The magic line's arguments after ``%%flow`` (options included), as shell words.
    args: tuple[str, ...]
    body: str
    parameters: dict[str, Parameter]


# -- reading ---------------------------------------------------------------------------


def read_notebook(path: str | Path) -> dict[str, Any]:
    """Read an nbformat-4 notebook file as JSON, failing with a message naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotebookFormatError(str(p), "no such notebook file") from None
    except OSError as exc:
        raise NotebookFormatError(str(p), f"cannot read the file ({exc.strerror})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookFormatError(
            str(p), f"not a notebook: invalid JSON at line {exc.lineno} ({exc.msg})"
        ) from exc
    return load_notebook(data, source=str(p))


def load_notebook(data: Any, *, source: str = "<notebook>") -> dict[str, Any]:
    """Check that ``data`` is an nbformat-4 notebook and return it (cells' sources as strings)."""
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise NotebookFormatError(source, "not a notebook: no 'cells' list")
    if data.get("nbformat") != 4:
        raise NotebookFormatError(
            source,
            f"nbformat {data.get('nbformat')!r} is not supported; "
            "save the notebook with Jupyter (nbformat 4)",
        )
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict) or "cell_type" not in cell:
            raise NotebookFormatError(source, f"cell {i} is malformed (no 'cell_type')")
        cell["source"] = cell_source(cell)
        cell.setdefault("metadata", {})
    return data


def new_notebook(sources: list[str], *, kernel_name: str = "python3") -> dict[str, Any]:
    """Return a notebook of code cells with these sources (tests, examples, benchmarks)."""
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": kernel_name, "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "cells": [_code_cell(src, f"cell-{i}") for i, src in enumerate(sources)],
    }


def cell_source(cell: Mapping[str, Any]) -> str:
    """Return a cell's source as one string (nbformat allows a list of lines)."""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell: Mapping[str, Any]) -> list[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return list(tags) if isinstance(tags, list) else []


def _is_code(cell: Mapping[str, Any]) -> bool:
    return cell.get("cell_type") == "code"


def _magic_line(source: str) -> tuple[str, str]:
    """Split a cell into its first line and the rest (the cell magic's body)."""
    stripped = source.lstrip("\n")
    first, _, body = stripped.partition("\n")
    return first.strip(), body


def find_flow_cell(nb: Mapping[str, Any], *, source: str = "<notebook>") -> FlowCell | None:
    """Return the notebook's ``%%flow`` cell, None if it has none; two are an error."""
    found: FlowCell | None = None
    for index, cell in enumerate(nb["cells"]):
        if not _is_code(cell):
            continue
        line, body = _magic_line(cell_source(cell))
        if line != FLOW_MAGIC and not line.startswith(FLOW_MAGIC + " "):
            continue
        if found is not None:
            raise NotebookFormatError(
                source,
                f"cells {found.index} and {index} are both %%flow cells; keep exactly one",
            )
        try:
            args = tuple(shlex.split(line[len(FLOW_MAGIC) :]))
        except ValueError as exc:
            raise NotebookFormatError(source, f"cell {index}: bad %%flow line: {exc}") from exc
        name = args[0] if args and not args[0].startswith("-") else None
        params = parse_parameters(body, where=f"{source} cell {index}")
        found = FlowCell(index=index, name=name, args=args, body=body, parameters=params)
    return found


def find_parameters_cell(nb: Mapping[str, Any]) -> int | None:
    """Return the index of the parameters cell: the ``%%flow`` cell, else one tagged ``parameters``."""
    flow_cell = find_flow_cell(nb)
    if flow_cell is not None:
        return flow_cell.index
    for index, cell in enumerate(nb["cells"]):
        if PARAMETERS_TAG in _tags(cell):
            return index
    return None


def flow_name(nb: Mapping[str, Any], path: str | Path) -> str:
    """Return the flow's name: the one on the ``%%flow`` line, else the notebook's file stem."""
    flow_cell = find_flow_cell(nb, source=str(path))
    if flow_cell is not None and flow_cell.name:
        return flow_cell.name
    return Path(path).stem


def task_cells(nb: Mapping[str, Any]) -> list[int]:
    """Return the indices of the ``%%task`` cells, in order."""
    return [
        i
        for i, cell in enumerate(nb["cells"])
        if _is_code(cell)
        and (
            (line := _magic_line(cell_source(cell))[0]) == TASK_MAGIC
            or line.startswith(TASK_MAGIC + " ")
        )
    ]


# -- parameters ------------------------------------------------------------------------


def parse_parameters(source: str, *, where: str = "<cell>") -> dict[str, Parameter]:
    """Return the typed parameters a parameters cell body defines.

    Every top-level ``name = <literal>`` or ``name: type = <literal>`` is a parameter; other
    statements (imports, computed values) are ignored, as papermill ignores them.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise NotebookFormatError(
            where, f"the parameters cell is not valid Python: {exc.msg} (line {exc.lineno})"
        ) from exc
    params: dict[str, Parameter] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value, annotation = stmt.targets[0], stmt.value, None
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value, annotation = stmt.target, stmt.value, stmt.annotation
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        _parameters.check_parameter_name(target.id, field=f"{where}: {target.id}")
        try:
            default = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        types = _annotation_types(annotation) if annotation is not None else None
        if types is None:
            t = _JSON_TYPES.get(type(default))
            types = () if t is None or t == "null" else (t,)
        params[target.id] = Parameter(name=target.id, default=default, types=types)
    return params


def _annotation_types(node: ast.expr) -> tuple[str, ...] | None:
    """Map ``int``, ``str | None``, ``Optional[float]`` to JSON types; None if unknown."""
    if isinstance(node, ast.Constant) and node.value is None:
        return ("null",)
    if isinstance(node, ast.Name):
        t = _ANNOTATION_TYPES.get(node.id)
        return (t,) if t else None
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        if node.value.id in ("list", "tuple", "dict"):
            return (_ANNOTATION_TYPES[node.value.id],)
        if node.value.id == "Optional":
            inner = _annotation_types(node.slice)
            return (*inner, "null") if inner else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _annotation_types(node.left), _annotation_types(node.right)
        return (*left, *right) if left and right else None
    return None


def notebook_parameters(
    nb: Mapping[str, Any], *, source: str = "<notebook>"
) -> dict[str, Parameter]:
    """Return a notebook's parameters: its ``%%flow`` cell's, else its ``parameters`` cell's."""
    flow_cell = find_flow_cell(nb, source=source)
    if flow_cell is not None:
        return flow_cell.parameters
    anchor = find_parameters_cell(nb)
    if anchor is None:
        return {}
    return parse_parameters(cell_source(nb["cells"][anchor]), where=f"{source} cell {anchor}")


def notebook_parameters_schema(
    nb: Mapping[str, Any], *, source: str = "<notebook>"
) -> dict[str, Any]:
    """Return the JSON schema of a notebook's parameters (the one notebook → schema rule)."""
    return parameters_schema(notebook_parameters(nb, source=source))


def parameters_schema(params: Mapping[str, Parameter]) -> dict[str, Any]:
    """Return the JSON schema of a flow's parameters (stored on ``schemas.Flow``)."""
    return {
        "title": "Parameters",
        "type": "object",
        "properties": {name: p.schema() for name, p in params.items()},
        "additionalProperties": False,
    }


def _schema_types(prop: Mapping[str, Any]) -> tuple[str, ...]:
    t = prop.get("type")
    if isinstance(t, str):
        return (t,)
    if isinstance(t, list):
        return tuple(str(x) for x in t)
    return ()


def validate_parameters(
    schema: Mapping[str, Any], values: Mapping[str, Any], *, flow_name: str | None = None
) -> dict[str, Any]:
    """Check ``values`` against a parameters schema with :func:`nbflow.parameters.validate_parameters`."""
    return _parameters.validate_parameters(schema, values, flow_name=flow_name)


def coerce_parameter(schema: Mapping[str, Any], name: str, text: str) -> Any:
    """Turn a command-line ``-p name=text`` into a value of the parameter's declared type.

    A string parameter takes the text as is; other types parse it as a Python/JSON literal
    (``3``, ``2.5``, ``true``, ``[1, 2]``); an unknown name is returned as a parsed literal
    so that :func:`validate_parameters` reports it.
    """
    prop = (schema.get("properties") or {}).get(name, {})
    types = _schema_types(prop)
    if types and types[0] == "string":
        return text
    lowered = {"true": True, "false": False, "null": None, "none": None}
    if text.strip().lower() in lowered:
        return lowered[text.strip().lower()]
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return text
    if isinstance(value, int) and not isinstance(value, bool) and "number" in types:
        return float(value)
    return value


# -- injection -------------------------------------------------------------------------


def inject_parameters(nb: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``nb`` with an ``injected-parameters`` cell after the parameters cell.

    Earlier injected cells are removed (re-running an output notebook does not pile them
    up).  Without a parameters cell the injected cell goes first.  No parameters: no cell.
    """
    out: dict[str, Any] = copy.deepcopy(dict(nb))
    out["cells"] = [c for c in out["cells"] if INJECTED_TAG not in _tags(c)]
    if not parameters:
        return out
    anchor = find_parameters_cell(out)
    for name in parameters:
        # Names become code in the injected cell: only identifiers ever get there.
        _parameters.check_parameter_name(name, field=f"parameters.{name}")
    lines = ["# Parameters"] + [f"{name} = {_literal(v)}" for name, v in parameters.items()]
    cell = _code_cell("\n".join(lines) + "\n", "injected-parameters", tags=[INJECTED_TAG])
    out["cells"].insert(0 if anchor is None else anchor + 1, cell)
    return out


def _literal(value: Any) -> str:
    text = repr(value)
    try:
        if ast.literal_eval(text) == value:
            return text
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    raise ParameterError(
        "parameters", value, "cannot be written as a Python literal", "Pass JSON-like values."
    )


def _code_cell(source: str, cell_id: str, *, tags: list[str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"tags": tags} if tags else {}
    return {
        "cell_type": "code",
        "id": cell_id,
        "metadata": metadata,
        "execution_count": None,
        "outputs": [],
        "source": source,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value
