"""The layers of DESIGN §4, checked on the source: every ``nbflow`` import points down.

domain ← orchestration ← client ← engine ← front ends (notebook, execution, cli).  Runners
import the domain and the client only; the dispatcher (``nbflow/dispatch/``, the worker)
drives runners through the client.  Nothing in ``nbflow`` imports the server extension, and
``import nbflow`` loads only the domain (the rest is lazy; ``tests/cli/test_import_cost.py``
checks what it costs).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nbflow"
RUNTIME = sorted(PACKAGE.rglob("*.py"))

#: The domain: what every layer may import.  Only these live at the top of ``nbflow/``.
DOMAIN = {"exceptions", "parameters", "schemas", "settings", "states"}

#: The layer of each top-level name under ``nbflow/`` (a subpackage or a module).
LAYER_OF = {
    **dict.fromkeys(DOMAIN, "domain"),
    # Rule models, matching, message rendering and one delivery attempt: domain imports only.
    "notifications": "domain",
    "orchestration": "orchestration",
    "client": "client",
    "engine": "engine",
    "runners": "runners",
    "dispatch": "dispatch",
    "notebook": "notebook",
    "execution": "execution",
    "cli": "cli",
    "__main__": "cli",
    "__init__": "package",
}

_BELOW_FRONT_ENDS = {"domain", "orchestration", "client", "engine", "runners"}

#: Which layers each layer may import (its own included).
MAY_IMPORT: dict[str, set[str]] = {
    "domain": {"domain"},
    "orchestration": {"domain", "orchestration"},
    "client": {"domain", "orchestration", "client"},
    "engine": {"domain", "orchestration", "client", "engine"},
    "runners": {"domain", "client", "runners"},
    "dispatch": {"domain", "client", "runners", "dispatch"},
    "notebook": _BELOW_FRONT_ENDS | {"notebook"},
    "execution": _BELOW_FRONT_ENDS | {"notebook", "execution"},  # reads notebooks
    "cli": _BELOW_FRONT_ENDS | {"dispatch", "notebook", "execution", "cli", "package"},
    # ``from nbflow import flow`` resolves lazily; what ``import nbflow`` runs is checked below.
    "package": set(LAYER_OF.values()),
}

#: Known exceptions, each with the reason; remove an entry when its cause is gone.
ALLOWED: dict[tuple[str, str], str] = {}

#: Top-level modules of ``nbflow/`` that are not the domain, with the reason.
TOP_LEVEL_ALLOWED = {
    "__init__": "the package: lazy re-exports of the public API and the IPython extension",
    "__main__": "python -m nbflow",
}

SERVER_EXTENSION = {"nbflow_server", "jupyter_extension"}


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _layer(path: Path) -> str:
    top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    return LAYER_OF[top]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    """Return the module an ``ImportFrom`` names, relative imports made absolute."""
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(ROOT).with_suffix("").parts)
    package = package[: len(package) - node.level]
    return ".".join([*package, *([node.module] if node.module else [])])


def _imports(path: Path, *, runtime_only: bool = False) -> Iterator[tuple[int, str]]:
    """Yield (line, module) for every import of ``path``.

    ``from nbflow import states`` counts as ``nbflow.states`` when that is a module.  With
    ``runtime_only``, imports inside functions and ``if TYPE_CHECKING:`` are left out.
    """
    tree = ast.parse(path.read_text(), str(path))

    def visit(node: ast.AST) -> Iterator[tuple[int, str]]:
        if runtime_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return
        if runtime_only and isinstance(node, ast.If) and _is_type_checking(node):
            yield from (item for child in node.orelse for item in visit(child))
            return
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, path)
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                is_module = (ROOT / sub.replace(".", "/")).with_suffix(".py").is_file() or (
                    ROOT / sub.replace(".", "/") / "__init__.py"
                ).is_file()
                yield node.lineno, sub if is_module else module
        for child in ast.iter_child_nodes(node):
            yield from visit(child)

    yield from visit(tree)


def _nbflow_layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "nbflow":
        return None
    if len(parts) == 1:
        return "package"
    return LAYER_OF.get(parts[1], f"unknown ({parts[1]})")


@pytest.mark.parametrize("path", RUNTIME, ids=_rel)
def test_imports_point_down_the_layers(path: Path) -> None:
    layer = _layer(path)
    offending = []
    for line, module in _imports(path):
        target = _nbflow_layer(module)
        if target is None or target in MAY_IMPORT[layer]:
            continue
        if (_rel(path), module) in ALLOWED:
            continue
        offending.append(f"line {line}: {module} ({target})")
    assert not offending, (
        f"{_rel(path)} is in the {layer} layer, which may import only "
        f"{sorted(MAY_IMPORT[layer])}; it imports {'; '.join(offending)}"
    )


def test_every_allowed_exception_is_still_needed() -> None:
    stale = [
        f"{where} no longer imports {module}"
        for where, module in ALLOWED
        if not (ROOT / where).is_file() or module not in {m for _, m in _imports(ROOT / where)}
    ]
    assert not stale, f"remove from ALLOWED: {'; '.join(stale)}"


@pytest.mark.parametrize("path", RUNTIME, ids=_rel)
def test_runtime_never_imports_the_server_extension(path: Path) -> None:
    offending = [
        f"line {line}: {module}"
        for line, module in _imports(path)
        if module.split(".")[0] in SERVER_EXTENSION
    ]
    assert not offending, f"{_rel(path)} imports the server extension: {'; '.join(offending)}"


def test_the_top_of_the_package_holds_only_the_domain() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    misplaced = sorted(top - DOMAIN - set(TOP_LEVEL_ALLOWED))
    assert not misplaced, (
        f"{', '.join(f'nbflow/{m}.py' for m in misplaced)}: only the domain ({sorted(DOMAIN)}) lives at "
        "the top of nbflow/; move the module into its layer's subpackage"
    )


def test_every_subpackage_has_a_layer() -> None:
    unknown = sorted(
        p.name
        for p in PACKAGE.iterdir()
        if (p / "__init__.py").is_file() and p.name not in LAYER_OF
    )
    assert not unknown, f"nbflow/{unknown}: give each subpackage a layer in LAYER_OF"


def test_import_nbflow_runs_only_domain_imports() -> None:
    """``import nbflow`` in a kernel: its module-level imports are the domain at most."""
    offending = [
        f"line {line}: {module}"
        for line, module in _imports(PACKAGE / "__init__.py", runtime_only=True)
        if _nbflow_layer(module) not in (None, "domain")
    ]
    assert not offending, f"nbflow/__init__.py imports at import time: {'; '.join(offending)}"


def test_the_public_api_is_importable_from_nbflow() -> None:
    """``@flow``/``@task`` live in the engine; the names stay importable from ``nbflow``."""
    import nbflow
    from nbflow.engine.flows import Flow, flow
    from nbflow.engine.tasks import Task, task, unmapped

    assert (nbflow.flow, nbflow.Flow, nbflow.task, nbflow.Task, nbflow.unmapped) == (
        flow,
        Flow,
        task,
        Task,
        unmapped,
    )
