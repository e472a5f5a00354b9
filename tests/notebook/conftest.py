"""Run real notebooks in a real ipykernel (nbclient) against a temporary NBFLOW_HOME."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from nbflow.client.embedded import EmbeddedClient


class KernelRunner:
    """Execute notebooks in fresh kernels whose nbflow store lives under ``home``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self._client: EmbeddedClient | None = None

    def env(self, path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW")}
        env.update(NBFLOW_HOME=str(self.home), JPY_SESSION_NAME=str(path))
        env.update(extra or {})
        return env

    def notebook(self, sources: list[str], name: str = "test.ipynb") -> Path:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        path = self.tmp / name
        nbformat.write(nb, path)
        return path

    def client(self, nb: Any, path: Path, allow_errors: bool = False) -> NotebookClient:
        return NotebookClient(
            nb,
            timeout=120,
            kernel_name="python3",
            allow_errors=allow_errors,
            resources={"metadata": {"path": str(path.parent)}},
        )

    def run(
        self, path: Path, allow_errors: bool = False, extra_env: dict[str, str] | None = None
    ) -> Any:
        nb = nbformat.read(path, as_version=4)
        self.client(nb, path, allow_errors).execute(env=self.env(path, extra_env))
        return nb

    @property
    def store(self) -> EmbeddedClient:
        if self._client is None:
            self._client = EmbeddedClient.from_url(f"sqlite:///{self.home / 'nbflow.db'}")
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[KernelRunner]:
    assert sys.executable  # the kernel runs with this interpreter (the python3 native spec)
    runner = KernelRunner(tmp_path)
    yield runner
    runner.close()


def outputs_text(cell: Any) -> str:
    """Concatenate a cell's stream text, error names/values and text/plain data."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
        else:
            parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def widget_html(nb: Any) -> str:
    """Return the concatenated values of every HTML widget model stored in the notebook."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    values = []
    for model in state.get("state", {}).values():
        if model.get("model_name") == "HTMLModel":
            values.append(model["state"].get("value", ""))
    return "\n".join(values)
