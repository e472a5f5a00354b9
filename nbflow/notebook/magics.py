"""The IPython front end: ``%%flow``, ``%%task`` and ``%nbflow``.

``%load_ext nbflow`` (or ``c.InteractiveShellApp.extensions = ["nbflow"]`` in an IPython
profile) registers the magics.  One :class:`NotebookSession` per shell ties together the
parts of its state, each with one owner:

- :class:`~nbflow.notebook.kernel.KernelNotebook`: the notebook's path and the executing cell;
- :class:`~nbflow.notebook.interactive.InteractiveRun`: the current flow run (its engine),
  the only code that starts, cancels and finishes it, and the task runs made in it;
- :class:`~nbflow.notebook.cell_graph.CellGraph`: which task cell last produced each name
  (upstream tasks, staleness, cache keys), across runs;
- :class:`~nbflow.notebook.display.RunDisplay`: the run's live widget;
- :class:`~nbflow.notebook.server_commands.ServerLink`: the server client and the
  deployment made from this kernel.

- ``%%flow NAME [options]`` validates everything first, then finishes the previous run,
  starts an interactive flow run, executes the parameter assignments and shows the widget.
- ``%%task [NAME] [options]`` runs the cell as a task run of the current flow run through
  ``FlowRunEngine.run_task`` (retries, timeout, cache); a failure ends the run Failed and
  the next ``%%task`` cell resumes it (see ``interactive.py``).  Without a ``%%flow`` cell an
  implicit run named after the notebook starts.  When ``NBFLOW__FLOW_RUN_ID`` is set (a
  batch run under ``nbflow execute``) the cells report to that run instead, and the flow
  run's own states stay with the executing process.  There each completed cell persists
  its outputs, and a repair run restores the cells it may instead of running them
  (:mod:`nbflow.notebook.repair`).
"""

from __future__ import annotations

import atexit
import functools
import logging
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from nbflow.engine import FlowRunEngine, TaskOptions
from nbflow.engine.logging import get_run_logger, run_logger_for
from nbflow.exceptions import NbflowError, ValidationError
from nbflow.notebook import commands as magics_commands
from nbflow.notebook import server_commands as magics_server
from nbflow.notebook.arguments import (
    KNOWN_RUNNERS,
    parse_flow_line,
    parse_parameters,
    parse_task_line,
)
from nbflow.notebook.cell_graph import CellGraph
from nbflow.notebook.cell_runner import CellRunner
from nbflow.notebook.cells import analyze_cell
from nbflow.notebook.display import RunDisplay
from nbflow.notebook.interactive import InteractiveRun
from nbflow.notebook.kernel import KernelNotebook
from nbflow.notebook.repair import BatchCells, Restorable, cell_key, replay_outputs
from nbflow.notebook.resume import DoneTask
from nbflow.states import Cached, StateType

__all__ = ["NbflowMagics", "NotebookSession", "load_ipython_extension", "unload_ipython_extension"]

log = logging.getLogger("nbflow.notebook.magics")


def _runners() -> tuple[str, ...]:
    try:
        from nbflow.runners import available_runners

        found = set(available_runners())
    except Exception:  # the registry is optional here: fall back to the built-in names
        found = set()
    return tuple(sorted(found | set(KNOWN_RUNNERS)))


class NotebookSession:
    """One shell's nbflow state, each part with its owner; runs the ``%%flow``/``%%task`` cells."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.kernel = KernelNotebook(shell)
        self.display = RunDisplay()
        self.graph = CellGraph(shell)
        self.run = InteractiveRun(self.kernel, self.display, task_label=self.graph.label)
        self.server = magics_server.ServerLink()

    def start_flow(self, line: str, body: str) -> None:
        """Handle a ``%%flow`` cell: validate, finish the previous run, start a new one."""
        try:
            opts = parse_flow_line(line, _runners())
            defaults, schema = parse_parameters(body)
        except ValidationError as exc:
            raise UsageError(str(exc)) from None
        self.run.start(opts, defaults, schema)
        exec(compile(body, "<%%flow parameters>", "exec"), self.shell.user_ns)
        magics_server.deploy_from_flow_cell(self, opts)

    def run_task_cell(self, line: str, cell: str) -> Any:
        """Handle a ``%%task`` cell: analyse, run through the engine, restore on cache hit."""
        try:
            spec = parse_task_line(line)
        except ValidationError as exc:
            raise UsageError(str(exc)) from None
        analysis = analyze_cell(cell, transform=self.shell.transform_cell)
        key, name = self.graph.identity(spec, analysis, self.kernel.cell_id)
        engine = self.run.ensure(rerun_key=key)
        inputs = [n for n in analysis.inputs if n in self.shell.user_ns]
        upstream = self.graph.upstream(key, inputs, spec.after)
        cache_key = (
            self.graph.cache_key(analysis, inputs, name, self.run.parameters)
            if spec.cache
            else None
        )
        runner = CellRunner(self.shell, cell, analysis, for_cache=cache_key is not None)
        batch = self.run.batch_cells if self.run.batch else None
        if batch is not None:
            restore_key, why_no_key = cell_key(analysis, self.shell.user_ns, inputs)
            found, why_not = batch.restorable(key, restore_key, why_no_key)
            if found is not None:
                why_not = self._restore_cell(engine, runner, found, key, name, inputs, upstream)
                if why_not is None:
                    return None
            if why_not is not None:
                flow_log = run_logger_for(engine.sink, engine.flow_run.id)
                flow_log.info("task %r runs again: %s", name, why_not)
            if batch.persists:
                runner.persist = functools.partial(
                    self._persist, batch, name, restore_key, why_no_key, cache_key is not None
                )
        options = TaskOptions(
            name=name,
            retries=spec.retries,
            retry_delay_seconds=spec.retry_delay_seconds,
            timeout_seconds=spec.timeout_seconds,
            cache_expiration=spec.cache_expiration,
            tags=spec.tags,
            persist_result=True if runner.persist is not None else None,
        )
        try:
            _task_run, state, value = self.run.run_task(
                engine,
                runner,
                task_key=key,
                options=options,
                inputs=inputs,
                outputs=list(analysis.outputs),
                upstream_keys=upstream,
                cache_key=cache_key,
                on_cache_hit=runner.restore,
            )
        except KeyboardInterrupt as exc:
            runner.prepare_traceback(
                exc, note=f"nbflow: task {name!r} and its flow run were cancelled (interrupt)"
            )
            raise
        stale = self.graph.record(key, inputs, analysis, state)
        self.display.mark_stale(stale)
        self.run.settle(key, stale)
        self.display.refresh()
        if state.type is StateType.COMPLETED:
            return None
        if isinstance(value, BaseException):
            runner.prepare_traceback(value)
            raise value
        raise NbflowError(f"task {name!r} ended {state}")

    @staticmethod
    def _persist(
        batch: BatchCells,
        name: str,
        key: str | None,
        why_no_key: str | None,
        cached: bool,
        value: dict[str, Any],
        size: int,
    ) -> dict[str, Any]:
        """Complete a batch cell's persisted record; log why a repair cannot restore it."""
        value, why = batch.finish_value(value, key, why_no_key, size, keep=cached)
        if why is not None:
            get_run_logger().warning(
                "task %r: a repair of this run executes this cell again: %s", name, why
            )
        return value

    def _restore_cell(
        self,
        engine: FlowRunEngine,
        runner: CellRunner,
        found: Restorable,
        key: str,
        name: str,
        inputs: list[str],
        upstream: set[str],
    ) -> str | None:
        """Restore a task cell of a repaired run instead of running it; None when done."""
        try:
            runner.restore_namespace(found.value)
        except Exception as exc:  # e.g. a class its outputs need is gone
            return (
                f"not restored from flow run {found.from_flow_run_id}: its outputs cannot be "
                f"unpickled here ({type(exc).__name__}: {exc})"
            )
        replay_outputs(found.value.get("cell_outputs") or [])
        task = found.task
        state = Cached(
            message=(
                f"restored from flow run {found.from_flow_run_id} (task run "
                f"{task.task_run_id}): its code and inputs are unchanged"
            ),
            data={
                "source_flow_run_id": str(found.from_flow_run_id),
                "source_task_run_id": str(task.task_run_id),
                "repaired_from": str(found.from_flow_run_id),
                "result_key": task.result_key,
            },
        )
        done = DoneTask(
            key=key,
            name=name,
            inputs=tuple(inputs),
            outputs=tuple(runner.analysis.outputs),
            upstream=tuple(sorted(upstream)),
            source_flow_run_id=found.from_flow_run_id,
            source_task_run_id=task.task_run_id,
        )
        self.run.record_cached(engine, done, state)
        stale = self.graph.record(key, inputs, runner.analysis, state)
        self.display.mark_stale(stale)
        self.display.refresh()
        return None


@magics_class
class NbflowMagics(Magics):
    """``%%flow``, ``%%task`` and ``%nbflow``."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.session = NotebookSession(shell)

    @cell_magic
    def flow(self, line: str, cell: str) -> None:
        """Start an interactive flow run: ``%%flow NAME [--schedule CRON] [--runner R] ...``.

        The cell body is the parameters cell (literal assignments only).
        """
        self.session.start_flow(line, cell)

    @cell_magic
    def task(self, line: str, cell: str) -> Any:
        """Run the cell as a task: ``%%task [NAME] [--retries N] [--cache [TTL]] ...``."""
        return self.session.run_task_cell(line, cell)

    @line_magic
    def nbflow(self, line: str) -> Any:
        """``%nbflow status|runs|show ID|cancel ID|finish|run|deploy``."""
        return magics_commands.dispatch(self.session, line)


_loaded: dict[int, NbflowMagics] = {}


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics with ``ipython`` (``%load_ext nbflow``)."""
    if id(ipython) in _loaded:
        return
    magics = NbflowMagics(ipython)
    ipython.register_magics(magics)
    _quiet_load_ext(ipython)
    ipython.events.register("pre_run_cell", magics.session.kernel.pre_run_cell)
    _loaded[id(ipython)] = magics
    atexit.register(_finish_at_exit, magics.session)


def _quiet_load_ext(ipython: Any) -> None:
    """Make ``%load_ext nbflow`` silent once nbflow is loaded (other extensions unchanged).

    IPython prints "The nbflow extension is already loaded. To reload it..." when a
    notebook's ``%load_ext nbflow`` cell runs in a kernel that loaded nbflow already (a
    server's kernel, a batch run, an IPython profile): noise in the cell and the run's logs.
    """
    original = ipython.find_line_magic("load_ext")
    if original is None or getattr(original, "_nbflow_quiet", False):
        return

    def load_ext(line: str) -> Any:
        if line.strip() == "nbflow" and id(ipython) in _loaded:
            return None
        return original(line)

    load_ext.__doc__ = original.__doc__
    load_ext._nbflow_quiet = True  # type: ignore[attr-defined]
    ipython.register_magic_function(load_ext, "line", "load_ext")


def unload_ipython_extension(ipython: Any) -> None:
    """Finish the current run and forget the session (``%unload_ext nbflow``)."""
    magics = _loaded.pop(id(ipython), None)
    if magics is not None:
        ipython.events.unregister("pre_run_cell", magics.session.kernel.pre_run_cell)
        magics.session.run.finish()


def _finish_at_exit(session: NotebookSession) -> None:
    try:
        session.run.finish()
    except Exception:  # the interpreter is going away; nothing to report to
        log.debug("finishing the interactive run at exit failed", exc_info=True)
