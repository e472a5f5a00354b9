"""nbflow's papermill engine: papermill's nbclient engine, reporting each cell as it ends.

Registered as papermill engine ``nbflow`` (:data:`ENGINE_NAME`) when imported.  The
execution manager reports every finished cell to the run's
:class:`~nbflow.execution.reporter.Reporter`, refuses to start a cell once the run was told
to stop (:class:`_Terminated`), and throttles papermill's whole-notebook saves while cells
run.  :mod:`nbflow.execution.executor` drives it.
"""

from __future__ import annotations

from typing import Any

from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

from nbflow.execution.reporter import Reporter

__all__ = ["ENGINE_NAME", "SAVE_EVERY_SECONDS", "NbflowEngine"]

#: The papermill engine name under which nbflow's reporting engine is registered.
ENGINE_NAME = "nbflow"


class _Terminated(BaseException):
    """SIGTERM arrived: the run is rescheduled (or cancelled when Cancelling)."""


#: Longest a running notebook's output file lags behind its cells.
SAVE_EVERY_SECONDS = 5.0


class _ReportingManager(NotebookExecutionManager):  # type: ignore[misc]
    reporter: Reporter | None = None
    #: While cells run, papermill's save() (the whole notebook, validated, at every cell's
    #: start and end: O(cells²), ~10 ms a cell at 100 cells) writes at most every
    #: :data:`SAVE_EVERY_SECONDS`, so a killed run still leaves recent outputs on disk; the
    #: output is written whole when the notebook completes, and by the crash path.
    _throttle = False

    def save(self, **kwargs: Any) -> None:
        if self._throttle:
            elapsed = (self.now() - self.last_save_time).total_seconds()
            if elapsed < min(self.autosave_cell_every, SAVE_EVERY_SECONDS):
                return
        super().save(**kwargs)

    def notebook_start(self, **kwargs: Any) -> None:
        super().notebook_start(**kwargs)
        self._throttle = True

    def notebook_complete(self, **kwargs: Any) -> None:
        self._throttle = False
        super().notebook_complete(**kwargs)

    def cell_start(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        if self.reporter is not None and self.reporter.terminated.is_set():
            raise _Terminated()
        super().cell_start(cell, cell_index=cell_index, **kwargs)

    def cell_complete(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        super().cell_complete(cell, cell_index=cell_index, **kwargs)
        if self.reporter is not None and cell_index is not None:
            self.reporter.cell_complete(cell_index, cell)


class NbflowEngine(NBClientEngine):  # type: ignore[misc]
    """papermill's nbclient engine, reporting each finished cell to a :class:`Reporter`."""

    #: The notebook being executed (its outputs so far), for saving after a crash.
    current: Any = None

    @classmethod
    def execute_notebook(
        cls,
        nb: Any,
        kernel_name: str,
        output_path: str | None = None,
        progress_bar: bool = False,
        log_output: bool = False,
        autosave_cell_every: int = 30,
        **kwargs: Any,
    ) -> Any:
        reporter = kwargs.pop("nbflow_reporter", None)
        nb_man = _ReportingManager(
            nb,
            output_path=output_path,
            progress_bar=progress_bar,
            log_output=log_output,
            autosave_cell_every=autosave_cell_every,
        )
        nb_man.reporter = reporter
        cls.current = nb_man.nb
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb


papermill_engines.register(ENGINE_NAME, NbflowEngine)
