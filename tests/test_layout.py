"""The dependency direction of DESIGN §4, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = sorted((ROOT / "nbflow").rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", RUNTIME, ids=lambda p: str(p.relative_to(ROOT)))
def test_runtime_never_imports_the_server_extension(path: Path) -> None:
    offending = {
        n for n in _imports(path) if n.split(".")[0] in {"nbflow_server", "jupyter_extension"}
    }
    assert not offending, f"{path.relative_to(ROOT)} imports {offending}"


@pytest.mark.parametrize(
    "path", sorted((ROOT / "nbflow" / "runners").glob("*.py")), ids=lambda p: p.name
)
def test_runners_never_import_the_engine(path: Path) -> None:
    offending = {
        n for n in _imports(path) if n.startswith(("nbflow.engine", "nbflow.flows", "nbflow.tasks"))
    }
    assert not offending, f"{path.name} imports {offending}"
