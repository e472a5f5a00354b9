"""What the kernel knows about its notebook: the file's path and the executing cell.

Jupyter tells a kernel its notebook's path (``__session__``, or ``__vsc_ipynb_file__`` in
VS Code) and, with each execute request, the cell's id; both are read here only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["KernelNotebook", "notebook_path"]


def notebook_path(shell: Any) -> Path | None:
    """Return the path of the notebook this kernel runs, when Jupyter tells it."""
    ns = getattr(shell, "user_ns", {})
    for candidate in (ns.get("__session__"), ns.get("__vsc_ipynb_file__")):
        if isinstance(candidate, str) and candidate.endswith(".ipynb"):
            return Path(candidate)
    return None


class KernelNotebook:
    """The notebook behind one shell: its path and the id of the cell being executed."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.cell_id: str | None = None  # of the executing cell, when the frontend sends it

    def path(self) -> Path | None:
        """Return the notebook's path as Jupyter gave it (relative to its root, or absolute)."""
        return notebook_path(self.shell)

    def pre_run_cell(self, info: Any) -> None:
        """Remember the executing cell's id (IPython ``pre_run_cell`` event)."""
        cell_id = getattr(info, "cell_id", None)
        self.cell_id = str(cell_id)[:16] if cell_id else None
