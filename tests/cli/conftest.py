"""Run the real ``nbflow`` command in subprocesses against a scratch ``NBFLOW_HOME``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

NBFLOW = Path(sys.executable).parent / "nbflow"


@dataclass
class Result:
    """What a command did."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Runner = Callable[..., Result]


@pytest.fixture
def nbflow_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def nbflow(nbflow_home: Path, tmp_path: Path) -> Runner:
    """Return ``run(*args) -> Result`` running the ``nbflow`` command in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW_")}
    env["NBFLOW_HOME"] = str(nbflow_home)

    def run(*args: str, cwd: Path | None = None, timeout: float = 120) -> Result:
        proc = subprocess.run(
            [str(NBFLOW), *args],
            cwd=cwd or tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def flow_file(tmp_path: Path) -> Callable[[str, str], Path]:
    """Return ``write(name, source) -> path`` writing a flow file into ``tmp_path``."""

    def write(name: str, source: str) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write
