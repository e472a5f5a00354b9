"""``import nbflow`` (what a kernel pays) and the CLI's start-up stay free of heavy modules.

Asserts on ``sys.modules`` in a fresh interpreter only; timings live in ``benchmarks/``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["tornado", "jupyter_server", "IPython", "sqlalchemy", "docker", "kubernetes"]


def _loaded_after(statement: str) -> list[str]:
    code = f"import json, sys; {statement}; print('\\n' + json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(json.loads(proc.stdout.splitlines()[-1]))
    return [m for m in HEAVY if m in modules]


@pytest.mark.parametrize(
    "statement",
    [
        "import nbflow",
        "import nbflow.cli",
        "from nbflow.cli import main; main(['version'])",
    ],
)
def test_statement_imports_no_heavy_module(statement: str) -> None:
    assert _loaded_after(statement) == []
