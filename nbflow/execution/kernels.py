"""Kernel managers for batch runs (``nbflow execute``), kept light to import.

``nbflow execute`` starts its kernel before it imports papermill, so this module imports
only jupyter_client, and only when called.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

__all__ = ["new_kernel_manager"]


def new_kernel_manager(kernel_name: str) -> Any:
    """Return a KernelManager for one batch kernel, talking over IPC sockets.

    Unix sockets under the Jupyter runtime directory instead of TCP: no port is opened on
    the machine, and ipykernel does not warn about unencrypted TCP on every run.  The
    sockets are removed when the kernel shuts down.
    """
    from jupyter_client.manager import KernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    runtime = Path(jupyter_runtime_dir())
    runtime.mkdir(parents=True, exist_ok=True)
    prefix = runtime / f"nbflow-kernel-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return KernelManager(kernel_name=kernel_name, transport="ipc", ip=str(prefix))
