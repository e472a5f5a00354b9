"""What changes between two versions of a deployment: its fields and its notebook's code.

Pure functions over definitions (the JSON of a deployment's editable fields) and
notebooks; the store records versions with them, the server answers dry runs, version
conflicts and code diffs with them.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel

from nbflow.schemas import Deployment, DeploymentCreate, FieldChange

__all__ = [
    "DEFINITION_FIELDS",
    "EDITABLE_FIELDS",
    "CellDiff",
    "code_cell_diff",
    "definition_of",
    "field_changes",
    "notebook_sha256",
    "summarize",
]

#: Fields an update may change: everything a user gives to deploy, except the flow.
EDITABLE_FIELDS: tuple[str, ...] = tuple(f for f in DeploymentCreate.model_fields if f != "flow_id")
#: Fields of a version's definition (the notebook is stored apart, once per snapshot).
DEFINITION_FIELDS: tuple[str, ...] = tuple(f for f in EDITABLE_FIELDS if f != "notebook")


def definition_of(deployment: Deployment) -> dict[str, Any]:
    """Return the deployment's editable fields (without the notebook) as JSON data."""
    return deployment.model_dump(mode="json", include=set(DEFINITION_FIELDS))


def notebook_sha256(notebook: Mapping[str, Any] | None) -> str | None:
    """Return the sha256 of the notebook's canonical JSON (None for no notebook)."""
    if notebook is None:
        return None
    canonical = json.dumps(notebook, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _comparable(name: str, value: Any) -> Any:
    # Schedule ids are new on every PATCH that sends schedules; what they say is what counts.
    if name == "schedules" and isinstance(value, list):
        return [{k: v for k, v in s.items() if k != "id"} for s in value if isinstance(s, dict)]
    return value


def _notebook_summary(notebook: Mapping[str, Any] | None, digest: str | None) -> Any:
    if notebook is None and digest is None:
        return None
    out: dict[str, Any] = {"sha256": digest}
    if notebook is not None:
        out["code_cells"] = len(_code_sources(notebook))
    return out


def field_changes(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    old_notebook: tuple[str | None, Mapping[str, Any] | None] = (None, None),
    new_notebook: tuple[str | None, Mapping[str, Any] | None] = (None, None),
) -> list[FieldChange]:
    """Return the fields whose value differs between two definitions, in field order.

    The notebook is compared by hash (``(sha256, notebook)`` pairs); its change shows the
    hashes and the number of code cells, not the whole notebook.
    """
    changes = [
        FieldChange(field=name, old=old.get(name), new=new.get(name))
        for name in DEFINITION_FIELDS
        if _comparable(name, old.get(name)) != _comparable(name, new.get(name))
    ]
    if old_notebook[0] != new_notebook[0]:
        changes.append(
            FieldChange(
                field="notebook",
                old=_notebook_summary(old_notebook[1], old_notebook[0]),
                new=_notebook_summary(new_notebook[1], new_notebook[0]),
            )
        )
    return changes


def summarize(changes: list[FieldChange], *, created: bool = False) -> str:
    """Return a one-line summary of a version: ``created`` or the fields it changed."""
    if created:
        return "created"
    names = [c.field for c in changes]
    if names == ["paused"]:
        return "paused" if changes[0].new else "resumed"
    text = ", ".join("notebook snapshot" if n == "notebook" else n for n in names)
    return f"changed {text}" if text else "no change"


class CellDiff(BaseModel):
    """One code cell that differs between two notebooks, as a unified diff."""

    #: ``changed``, ``added`` (only in the new notebook) or ``removed``.
    status: Literal["changed", "added", "removed"]
    #: The cell's position among the code cells of the old / new notebook (0-based).
    old_index: int | None = None
    new_index: int | None = None
    diff: str


def _code_sources(notebook: Mapping[str, Any]) -> list[str]:
    out = []
    for cell in notebook.get("cells") or []:
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            source = cell.get("source", "")
            out.append("".join(source) if isinstance(source, list) else str(source))
    return out


def _unified(old: str, new: str, old_name: str, new_name: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=old_name,
        tofile=new_name,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def code_cell_diff(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    *,
    old_label: str = "old",
    new_label: str = "new",
) -> list[CellDiff]:
    """Return a unified diff per code cell that changed, was added or was removed.

    Cells are aligned by their source (difflib over the list of code cells), so an inserted
    cell shows as one addition, not as every later cell changed.
    """
    a, b = _code_sources(old or {}), _code_sources(new or {})
    out: list[CellDiff] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        pairs = min(i2 - i1, j2 - j1) if tag == "replace" else 0
        for k in range(pairs):
            i, j = i1 + k, j1 + k
            diff = _unified(a[i], b[j], f"{old_label}/cell {i}", f"{new_label}/cell {j}")
            out.append(CellDiff(status="changed", old_index=i, new_index=j, diff=diff))
        for i in range(i1 + pairs, i2):
            diff = _unified(a[i], "", f"{old_label}/cell {i}", "/dev/null")
            out.append(CellDiff(status="removed", old_index=i, diff=diff))
        for j in range(j1 + pairs, j2):
            diff = _unified("", b[j], "/dev/null", f"{new_label}/cell {j}")
            out.append(CellDiff(status="added", new_index=j, diff=diff))
    return out
