"""Give kernels started by the Jupyter server the environment that connects them to nbflow.

The server's kernel manager is wrapped once: every ``start_kernel`` call (the kernels API,
sessions, restarts reuse the launch environment) gets ``NBFLOW_API_URL`` and
``NBFLOW_API_TOKEN`` added to the kernel's environment, so ``%%flow``/``%%task`` cells
report to this server without any set-up.  Variables already present (set by the user
in the server's environment or by the caller) are kept.  The server process's own
``os.environ`` is left alone, so nbflow code inside the server keeps its settings.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

__all__ = ["install_kernel_env"]

logger = logging.getLogger("nbflow.server.kernel_env")

_MARK = "_nbflow_kernel_env"


def install_kernel_env(serverapp: Any, environment: Callable[[], dict[str, str]]) -> bool:
    """Wrap ``serverapp.kernel_manager.start_kernel`` to add ``environment()``; False if absent."""
    km = getattr(serverapp, "kernel_manager", None)
    if km is None or getattr(km, _MARK, False):
        return False
    original = km.start_kernel

    @functools.wraps(original)
    async def start_kernel(*args: Any, **kwargs: Any) -> Any:
        base = kwargs.get("env")
        env = dict(base if base is not None else os.environ)
        try:
            extra = environment()
        except Exception:
            logger.warning("nbflow: kernel environment unavailable", exc_info=True)
            extra = {}
        if "NBFLOW_API_URL" not in env:
            env.update(extra)
        kwargs["env"] = env
        return await original(*args, **kwargs)

    km.start_kernel = start_kernel
    setattr(km, _MARK, True)
    return True
