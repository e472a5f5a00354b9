"""Kernel managers for batch runs (``nbflow execute``), kept light to import.

``nbflow execute`` starts its kernel before it imports papermill, so this module imports
only jupyter_client, and only when called.

A batch kernel dies with its executor: it gets a parent-death signal (SIGKILL when the
executor's process ends, on Linux), and its connection file and IPC sockets are named
``nbflow-kernel-<executor pid>-*`` in the Jupyter runtime directory, so whoever sees the
executor die (its runner) can remove what a killed executor could not
(``nbflow.runners.processes.remove_kernel_files``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

__all__ = ["KERNEL_FILE_PREFIX", "kernel_pid", "new_kernel_manager", "parent_death_signal"]

#: The name prefix of a batch kernel's files (``nbflow.runners.processes`` has the same).
KERNEL_FILE_PREFIX = "nbflow-kernel-"
_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved at import: between fork and exec nothing may be loaded.
_prctl = _load_prctl()


def parent_death_signal() -> None:
    """Have this process get SIGKILL when the thread that started it ends (Linux).

    Meant for ``preexec_fn`` (it runs between fork and exec).  A no-op where ``prctl``
    does not exist.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _runtime_dir() -> Path:
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir())


def new_kernel_manager(kernel_name: str) -> Any:
    """Return a KernelManager for one batch kernel, talking over IPC sockets.

    Unix sockets under the Jupyter runtime directory instead of TCP: no port is opened on
    the machine, and ipykernel does not warn about unencrypted TCP on every run.  The
    sockets are removed when the kernel shuts down.
    """
    from jupyter_client.manager import KernelManager

    class BatchKernelManager(KernelManager):  # type: ignore[misc]
        """A KernelManager whose kernel gets SIGKILL when this process dies."""

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            # jupyter_client passes the keywords on to Popen.  The kernel keeps its own
            # session (interrupts reach its children, not this process); see processes.py.
            kw.setdefault("preexec_fn", parent_death_signal)
            await super()._async_launch_kernel(kernel_cmd, **kw)

    runtime = _runtime_dir()
    runtime.mkdir(parents=True, exist_ok=True)
    prefix = runtime / f"{KERNEL_FILE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return BatchKernelManager(
        kernel_name=kernel_name,
        transport="ipc",
        ip=str(prefix),
        connection_file=f"{prefix}.json",
    )


def kernel_pid(km: Any) -> int | None:
    """Return the pid of the manager's kernel process (None: not started or not local)."""
    pid = getattr(getattr(km, "provisioner", None), "pid", None)
    return pid if isinstance(pid, int) else None
