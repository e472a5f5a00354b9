"""The server's warm pool of executors: settings and the runner options they give.

A mixin of :class:`~nbflow_server.app.NbflowApp` (``c.NbflowApp.warm_executors`` and so
on; docs/server.md, docs/runners.md "Warm executors"), kept apart so the app module holds
the wiring only.  When this server dispatches subprocess runs, the subprocess runner keeps
``warm_executors`` ``nbflow execute --standby`` processes ready (imports done, a python3
kernel started), each used for one run and replaced after its claim
(:mod:`nbflow.runners.standby`).
"""

from __future__ import annotations

from typing import Any

from traitlets import Float, Integer, TraitError, validate
from traitlets.config import Configurable

from nbflow.runners import Runner
from nbflow.runners.subprocess import SubprocessRunner

__all__ = ["WarmPoolSettings"]


class WarmPoolSettings(Configurable):
    """How many executors the subprocess runner starts ahead, and the memory they need."""

    warm_executors = Integer(
        1,
        help=(
            "Executors (`nbflow execute --standby`: imports done, a python3 kernel started) "
            "the server's subprocess runner keeps ready; each takes one run and is replaced "
            "after its claim, so a kernel never serves two runs.  0: every run starts cold."
        ),
    ).tag(config=True)

    warm_executor_min_memory_mb = Float(
        1024.0,
        help=(
            "Start no executor ahead while less memory than this (MiB) is available "
            "(MemAvailable); runs then start cold and the server logs why.  0: no check."
        ),
    ).tag(config=True)

    @validate("warm_executors")
    def _non_negative_pool(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 0:
            raise TraitError(f"NbflowApp.warm_executors={value!r}: must be 0 (off) or more")
        return value

    @validate("warm_executor_min_memory_mb")
    def _non_negative_memory(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value < 0:
            raise TraitError(
                f"NbflowApp.warm_executor_min_memory_mb={value!r}: must be 0 (no check) or more"
            )
        return value

    def warm_pool_options(self, cls: type[Runner], *, dispatching: bool) -> dict[str, Any]:
        """Return the keyword arguments that give runner ``cls`` its warm pool (none for
        runners other than the subprocess runner, or when this server does not dispatch)."""
        if not dispatching or not self.warm_executors or not issubclass(cls, SubprocessRunner):
            return {}
        return {
            "prestart": self.warm_executors,
            "min_available_memory_mb": self.warm_executor_min_memory_mb,
        }
