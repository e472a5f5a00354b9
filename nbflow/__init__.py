"""nbflow: Jupyter-native workflow orchestration.

``from nbflow import flow, task`` is the Python API; ``%load_ext nbflow`` loads the
``%%flow`` / ``%%task`` magics.  Heavy parts (the store, the engine, IPython) load on first
use, so ``import nbflow`` stays cheap in a kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Flow",
    "NotebookRun",
    "NotebookRunFailed",
    "State",
    "StateType",
    "Task",
    "TaskRunFuture",
    "__version__",
    "flow",
    "get_client",
    "get_run_logger",
    "run_notebook",
    "task",
    "unmapped",
]

_LAZY = {
    "flow": "nbflow.engine.flows",
    "Flow": "nbflow.engine.flows",
    "task": "nbflow.engine.tasks",
    "Task": "nbflow.engine.tasks",
    "unmapped": "nbflow.engine.tasks",
    "TaskRunFuture": "nbflow.engine.futures",
    "get_run_logger": "nbflow.engine.logging",
    "get_client": "nbflow.client",
    "run_notebook": "nbflow.notebook.pipeline",
    "NotebookRun": "nbflow.notebook.pipeline",
    "NotebookRunFailed": "nbflow.notebook.pipeline",
    "State": "nbflow.states",
    "StateType": "nbflow.states",
}

if TYPE_CHECKING:
    from nbflow.client import get_client
    from nbflow.engine.flows import Flow, flow
    from nbflow.engine.futures import TaskRunFuture
    from nbflow.engine.logging import get_run_logger
    from nbflow.engine.tasks import Task, task, unmapped
    from nbflow.notebook.pipeline import NotebookRun, NotebookRunFailed, run_notebook
    from nbflow.states import State, StateType


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbflow' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``%%flow``, ``%%task`` and ``%nbflow`` magics (``%load_ext nbflow``)."""
    from nbflow.notebook.magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove what :func:`load_ipython_extension` registered."""
    from nbflow.notebook.magics import unload_ipython_extension as _unload

    _unload(ipython)
