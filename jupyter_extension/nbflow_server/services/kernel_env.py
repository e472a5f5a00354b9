"""Give kernels started by the Jupyter server what connects them to nbflow.

The server's kernel manager is wrapped once: every ``start_kernel`` call (the kernels API,
sessions; restarts reuse the launch arguments) gets

- ``NBFLOW_API_URL`` and ``NBFLOW_API_TOKEN`` in the kernel's environment, so
  ``%%flow``/``%%task`` cells report to this server without any set-up.  Variables
  already present (set by the user in the server's environment or by the caller) are kept;
- ``NBFLOW__KERNEL_ID``, the kernel's id in this server: its interactive runs record
  ``kernel:<id>`` as their infrastructure, which lets the server interrupt the kernel on
  cancel and crash the run when the kernel dies (:mod:`nbflow_server.services.kernels`);
- ``--ext=nbflow`` on the command line of ipykernel kernels (``autoload``): IPython loads
  the extension before the first cell, kernel-scoped, with no user configuration (the
  alias sets ``InteractiveShellApp.extra_extensions``, so a user's own ``extensions`` list
  is left alone).  Kernels of other languages are launched unchanged.

The server process's own ``os.environ`` is left alone, so nbflow code inside the server
keeps its settings.
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["AUTOLOAD_ARGUMENT", "install_kernel_env", "is_ipykernel"]

logger = logging.getLogger("nbflow.server.kernel_env")

_MARK = "_nbflow_kernel_env"
#: The IPython option that loads nbflow as the kernel starts.
AUTOLOAD_ARGUMENT = "--ext=nbflow"


def is_ipykernel(argv: list[str]) -> bool:
    """Whether a kernelspec's ``argv`` launches ipykernel (which takes IPython options)."""
    return any("ipykernel" in part for part in argv)


def install_kernel_env(
    serverapp: Any, environment: Callable[[], dict[str, str]], *, autoload: bool = True
) -> bool:
    """Wrap ``serverapp.kernel_manager.start_kernel`` (see the module); False if absent."""
    km = getattr(serverapp, "kernel_manager", None)
    if km is None or getattr(km, _MARK, False):
        return False
    original = km.start_kernel

    def launches_ipykernel(kernel_name: str | None) -> bool:
        try:
            spec = km.kernel_spec_manager.get_kernel_spec(kernel_name or km.default_kernel_name)
        except Exception:
            return False
        return is_ipykernel(list(spec.argv))

    @functools.wraps(original)
    async def start_kernel(*args: Any, **kwargs: Any) -> Any:
        kernel_id = kwargs.get("kernel_id")
        if kernel_id is not None and kernel_id in km:
            return await original(*args, **kwargs)  # an existing kernel: nothing starts
        # Chosen here (as the kernel manager would) so the kernel's environment can say it.
        kernel_id = kwargs["kernel_id"] = kernel_id or str(uuid.uuid4())
        base = kwargs.get("env")
        env = dict(base if base is not None else os.environ)
        try:
            extra = environment()
        except Exception:
            logger.warning("nbflow: kernel environment unavailable", exc_info=True)
            extra = {}
        if "NBFLOW_API_URL" not in env:
            env.update(extra)
        env["NBFLOW__KERNEL_ID"] = kernel_id
        kwargs["env"] = env
        if autoload and launches_ipykernel(kwargs.get("kernel_name")):
            extra_arguments = list(kwargs.get("extra_arguments") or [])
            if AUTOLOAD_ARGUMENT not in extra_arguments:
                kwargs["extra_arguments"] = [*extra_arguments, AUTOLOAD_ARGUMENT]
        return await original(*args, **kwargs)

    km.start_kernel = start_kernel
    setattr(km, _MARK, True)
    return True
