"""The IPython front end: ``%%flow``, ``%%task`` and ``%nbflow``.

``%load_ext nbflow`` (or ``c.InteractiveShellApp.extensions = ["nbflow"]`` in an IPython
profile) registers the magics.  One :class:`NotebookSession` per shell holds the current
interactive flow run (a :class:`~nbflow.engine.FlowRunEngine`), its widget, and the
cell-level DAG: which task cell last produced each name.

- ``%%flow NAME [options]`` validates everything first, then finishes the previous run,
  starts an interactive flow run, executes the parameter assignments and shows the widget.
- ``%%task [NAME] [options]`` runs the cell as a task run of the current flow run through
  ``FlowRunEngine.run_task`` (retries, timeout, cache).  Without a ``%%flow`` cell an
  implicit run named after the notebook starts.  When ``NBFLOW__FLOW_RUN_ID`` is set (a
  batch run under ``nbflow execute``) the cells report to that run instead, and the flow
  run's own states stay with the executing process.
"""

from __future__ import annotations

import atexit
import logging
import sys
import types
from pathlib import Path
from typing import Any
from uuid import UUID

import cloudpickle
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from nbflow.notebook import commands as magics_commands
from nbflow.notebook import server_commands as magics_server
from nbflow.notebook.cells import CellAnalysis, analyze_cell
from nbflow.engine import FlowRunEngine, TaskOptions, events
from nbflow.exceptions import NbflowError, ValidationError
from nbflow.engine.fingerprint import Unfingerprintable, cell_cache_key, fingerprint_inputs
from nbflow.notebook.arguments import (
    KNOWN_RUNNERS,
    FlowOptions,
    TaskOptionsSpec,
    parse_flow_line,
    parse_parameters,
    parse_task_line,
)
from nbflow.schemas import Artifact
from nbflow.settings import get_settings
from nbflow.states import Completed, Failed, State, StateType
from nbflow.notebook.widget import FlowRunWidget

__all__ = ["NbflowMagics", "NotebookSession", "load_ipython_extension", "unload_ipython_extension"]

log = logging.getLogger("nbflow.notebook.magics")


def notebook_path(shell: Any) -> Path | None:
    """Return the path of the notebook this kernel runs, when Jupyter tells it."""
    ns = getattr(shell, "user_ns", {})
    for candidate in (ns.get("__session__"), ns.get("__vsc_ipynb_file__")):
        if isinstance(candidate, str) and candidate.endswith(".ipynb"):
            return Path(candidate)
    return None


def _runners() -> tuple[str, ...]:
    try:
        from nbflow.runners import available_runners

        found = set(available_runners())
    except Exception:  # the registry is optional here: fall back to the built-in names
        found = set()
    return tuple(sorted(found | set(KNOWN_RUNNERS)))


class _CellFailed(Exception):
    """Internal: carries a cell's exception through the engine with its clean traceback."""


class NotebookSession:
    """The interactive flow run of one kernel and the DAG of its task cells."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.flow: FlowOptions | None = None
        self.parameters: dict[str, Any] = {}
        self.parameters_schema: dict[str, Any] = {}
        self.engine: FlowRunEngine | None = None
        self.widget: FlowRunWidget | None = None
        self.batch = False
        self._unsubscribe: Any = None
        self.producers: dict[str, str] = {}  # name -> task key that last assigned it
        self.task_inputs: dict[str, tuple[str, ...]] = {}
        self.task_run_ids: dict[str, UUID] = {}
        self.task_names: dict[str, str] = {}  # task name -> task key
        self.states: dict[str, State] = {}
        self.output_prints: dict[str, str | None] = {}  # task key -> its outputs' fingerprint
        self.task_outputs: dict[str, tuple[str, ...]] = {}
        self._anonymous = 0
        self._task_running = False
        self.cell_id: str | None = None  # of the executing cell, when the frontend sends it
        self.deployment_id: UUID | None = None  # deployed from this kernel (%nbflow deploy)

    def pre_run_cell(self, info: Any) -> None:
        """Remember the executing cell's id (IPython ``pre_run_cell`` event)."""
        cell_id = getattr(info, "cell_id", None)
        self.cell_id = str(cell_id)[:16] if cell_id else None

    # -- flow runs ---------------------------------------------------------------------
    def start_flow(self, line: str, body: str) -> None:
        """Handle a ``%%flow`` cell: validate, finish the previous run, start a new one."""
        try:
            opts = parse_flow_line(line, _runners())
            defaults, schema = parse_parameters(body)
        except ValidationError as exc:
            raise UsageError(str(exc)) from None
        self.finish()
        self.flow, self.parameters, self.parameters_schema = opts, defaults, schema
        self._start_engine()
        exec(compile(body, "<%%flow parameters>", "exec"), self.shell.user_ns)
        magics_server.deploy_from_flow_cell(self, opts)

    def _start_engine(self) -> None:
        path = notebook_path(self.shell)
        name = self.flow.name if self.flow else (path.stem if path else "interactive")
        settings = get_settings()
        if settings.flow_run_id is not None:
            from nbflow.client import get_client

            client = get_client()
            run = client.read_flow_run(settings.flow_run_id)
            self.engine = FlowRunEngine(client, run, mode="batch")
            self.parameters = dict(run.parameters) or self.parameters
            self.batch = True
        else:
            self.engine = FlowRunEngine.start(
                flow_name=name,
                parameters=self.parameters,
                parameters_schema=self.parameters_schema,
                source=str(path) if path else None,
                mode="interactive",
            )
            self._snapshot(path)
        engine = self.engine
        self.states.clear()
        self.task_run_ids.clear()
        self.widget = FlowRunWidget(
            engine.flow_run.id,
            name,
            run_name=engine.flow_run.name,
            on_cancel=self.cancel_from_widget,
        )
        self.widget.handle(
            events.FlowRunEvent(engine.flow_run.id, engine.flow_run.state or Completed())
        )
        self._unsubscribe = events.subscribe(self.widget.handle)
        self.widget.display()

    def _snapshot(self, path: Path | None) -> None:
        """Store the notebook as saved on disk with the run (the flow's source)."""
        if path is None or self.engine is None:
            return
        try:
            import json

            client = self.engine.client
            if not get_settings().uses_server:
                # A server takes only paths under its root; the snapshot below carries the notebook.
                client.update_flow_run(self.engine.flow_run.id, notebook_path=str(path))
            if not path.is_file():
                return
            notebook = json.loads(path.read_text(encoding="utf-8"))
            client.create_artifact(
                Artifact(
                    flow_run_id=self.engine.flow_run.id,
                    key="notebook-snapshot",
                    kind="notebook",
                    uri=str(path),
                    data=notebook,
                )
            )
        except Exception as exc:  # a snapshot is a convenience; the run goes on without it
            log.warning("could not snapshot %s: %s", path, exc)

    def ensure_engine(self) -> FlowRunEngine:
        """Return the current run, starting an implicit one when there is none."""
        if self.engine is None or self.engine.final_state is not None:
            self._start_engine()
        assert self.engine is not None
        return self.engine

    def cancel(self) -> None:
        """Cancel the current run cooperatively (the widget's button, ``%nbflow cancel``)."""
        if self.engine is not None:
            self.engine.cancel()

    def cancel_from_widget(self) -> None:
        """Handle the widget's Cancel button.

        Comm messages reach the kernel between cells, so this usually runs while no task
        cell runs: the run is then finished (Cancelled) at once.  Otherwise the running
        cell completes and the run ends when the next cell or ``%nbflow finish`` comes.
        """
        self.cancel()
        if not self._task_running:
            self.finish()

    def finish(self, state: State | None = None) -> State | None:
        """End the current run (Failed when a task's latest run failed) and stop listening."""
        engine, self.engine = self.engine, None
        if engine is None:
            return None
        final = None
        if not self.batch:
            if state is None and not engine.is_cancelled:
                bad = (StateType.FAILED, StateType.CRASHED)
                failed = [self._display_name(k) for k, s in self.states.items() if s.type in bad]
                if failed:
                    state = Failed(message=f"task(s) failed: {', '.join(failed)}")
            final = engine.finish(state)
        else:
            engine.recorder.flush(10)
        if self.widget is not None:
            self.widget.refresh_display()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        return final

    def _display_name(self, key: str) -> str:
        for name, k in self.task_names.items():
            if k == key:
                return name
        return key

    # -- task cells --------------------------------------------------------------------
    def run_task_cell(self, line: str, cell: str) -> Any:
        """Handle a ``%%task`` cell: analyse, run through the engine, restore on cache hit."""
        try:
            spec = parse_task_line(line)
        except ValidationError as exc:
            raise UsageError(str(exc)) from None
        analysis = analyze_cell(cell, transform=self.shell.transform_cell)
        engine = self.ensure_engine()
        key, name = self._task_identity(spec, analysis)
        ns = self.shell.user_ns
        inputs = [n for n in analysis.inputs if n in ns]
        upstream_keys = {self.producers[n] for n in inputs if n in self.producers} - {key}
        for after in spec.after:
            if after not in self.task_names:
                known = ", ".join(sorted(self.task_names)) or "none yet"
                raise UsageError(f"--after {after}: no task of that name ran (known: {known})")
            upstream_keys.add(self.task_names[after])
        upstream = [self.task_run_ids[k] for k in sorted(upstream_keys) if k in self.task_run_ids]
        self._remember_upstream_prints(upstream_keys)
        cache_key = self._cache_key(spec, analysis, inputs, name) if spec.cache else None
        options = TaskOptions(
            name=name,
            retries=spec.retries,
            retry_delay_seconds=spec.retry_delay_seconds,
            timeout_seconds=spec.timeout_seconds,
            cache_expiration=spec.cache_expiration,
            tags=spec.tags,
        )
        runner = _CellRunner(self.shell, cell, analysis, for_cache=cache_key is not None)
        self._task_running = True
        try:
            with engine.activate():
                task_run, state, value = engine.run_task(
                    runner,
                    options=options,
                    task_key=key,
                    inputs=inputs,
                    outputs=list(analysis.outputs),
                    upstream=upstream,
                    cache_key=cache_key,
                    on_cache_hit=runner.restore,
                )
        except KeyboardInterrupt:
            self._task_running = False
            engine.cancel()
            self.finish()
            raise
        finally:
            self._task_running = False
        self.states[key] = state
        self.task_run_ids[key] = task_run.id
        self.task_inputs[key] = tuple(inputs)
        self._record_outputs(key, analysis, state)
        if self.widget is not None:
            self.widget.refresh_display()
        if state.type is StateType.COMPLETED:
            return None
        if isinstance(value, BaseException):
            runner.prepare_traceback(value)
            raise value
        raise NbflowError(f"task {name!r} ended {state}")

    def _task_identity(self, spec: TaskOptionsSpec, analysis: CellAnalysis) -> tuple[str, str]:
        if spec.name:
            self.task_names[spec.name] = spec.name
            return spec.name, spec.name
        cell_id = self.cell_id
        shown = [n for n in analysis.outputs if n not in analysis.imported] or list(
            analysis.outputs
        )
        if shown:
            name = "cell:" + ",".join(shown[:3]) + ("..." if len(shown) > 3 else "")
        else:
            self._anonymous += 1
            name = f"cell-{self._anonymous}"
        key = f"cell-{cell_id}" if cell_id else name
        self.task_names[name] = key
        return key, name

    def _cache_key(
        self, spec: TaskOptionsSpec, analysis: CellAnalysis, inputs: list[str], name: str
    ) -> str | None:
        if analysis.star_import:
            print(f"nbflow: {name}: cache off (a star import has unknown outputs)", file=sys.stderr)
            return None
        ns = self.shell.user_ns
        try:
            prints = fingerprint_inputs({n: ns[n] for n in inputs})
        except Unfingerprintable as exc:
            print(f"nbflow: {name}: cache off for this run: {exc}", file=sys.stderr)
            return None
        return cell_cache_key(analysis.normalized_source, prints, self.parameters)

    def _outputs_print(self, names: tuple[str, ...]) -> str | None:
        ns = self.shell.user_ns
        try:
            return str(fingerprint_inputs({n: ns[n] for n in names if n in ns}))
        except Unfingerprintable:
            return None

    def _remember_upstream_prints(self, upstream_keys: set[str]) -> None:
        """Fingerprint an upstream task's outputs the first time a task depends on them.

        Only tasks with dependents are fingerprinted, so cells nobody reads cost nothing.
        """
        for key in upstream_keys:
            if key not in self.output_prints and key in self.task_outputs:
                self.output_prints[key] = self._outputs_print(self.task_outputs[key])

    def _record_outputs(self, key: str, analysis: CellAnalysis, state: State) -> None:
        if not state.is_final_success:
            return
        for name in analysis.outputs:
            self.producers[name] = key
        for name in analysis.deleted:
            self.producers.pop(name, None)
        self.task_outputs[key] = analysis.outputs
        dependents = [
            k
            for k, ins in self.task_inputs.items()
            if k != key and any(self.producers.get(n) == key for n in ins)
        ]
        if not dependents or self.widget is None:
            self.output_prints.pop(key, None)
            return
        before = self.output_prints.get(key)
        now_print = self._outputs_print(analysis.outputs)
        self.output_prints[key] = now_print
        if now_print is None or before != now_print:
            self.widget.mark_stale(dependents)


class _CellRunner:
    """The task function of a ``%%task`` cell: execute its code in the user namespace."""

    def __init__(self, shell: Any, cell: str, analysis: CellAnalysis, for_cache: bool) -> None:
        self.shell, self.analysis, self.for_cache = shell, analysis, for_cache
        self.__name__ = "cell"
        import ast

        source = shell.transform_cell(cell)
        self.filename = shell.compile.cache(source, shell.execution_count, raw_code=cell)
        tree = ast.parse(source, filename=self.filename)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        flags = shell.compile.flags | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        self.body = compile(tree, self.filename, "exec", flags=flags, dont_inherit=True)
        self.last = (
            compile(
                ast.Expression(last.value), self.filename, "eval", flags=flags, dont_inherit=True
            )
            if last is not None
            else None
        )

    def _eval(self, code: types.CodeType) -> Any:
        ns = self.shell.user_ns
        result = eval(code, ns)
        if code.co_flags & 0x80:  # CO_COROUTINE: top-level await
            from nbflow.engine import loop

            result = loop.run_coroutine(result)
        return result

    def __call__(self) -> dict[str, Any]:
        ns = self.shell.user_ns
        self._eval(self.body)
        display: Any = None
        if self.last is not None:
            value = self._eval(self.last)
            if value is not None:
                self.shell.displayhook(value)
                if self.for_cache:
                    display = self.shell.display_formatter.format(value)
        outputs = {n: ns[n] for n in self.analysis.outputs if n in ns}
        if self.for_cache:
            outputs = self._pickled(outputs)
        return {"outputs": outputs, "deleted": list(self.analysis.deleted), "display": display}

    def _pickled(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """Pickle each output for the cache; leave out (and say so) what cannot be pickled."""
        pickled: dict[str, bytes] = {}
        for name, value in outputs.items():
            if isinstance(value, types.ModuleType):
                pickled[name] = cloudpickle.dumps(value)
                continue
            try:
                pickled[name] = cloudpickle.dumps(value)
            except Exception as exc:
                print(
                    f"nbflow: output {name!r} ({type(value).__name__}) cannot be cached "
                    f"({type(exc).__name__}); a cache hit will not restore it",
                    file=sys.stderr,
                )
        return pickled

    def restore(self, value: Any) -> None:
        """Put a cached cell's outputs back into the namespace and re-show its result."""
        ns = self.shell.user_ns
        for name, data in value.get("outputs", {}).items():
            ns[name] = cloudpickle.loads(data)
        for name in value.get("deleted", ()):
            ns.pop(name, None)
        if value.get("display"):
            from IPython import display as ipython_display

            publish: Any = ipython_display.publish_display_data
            data, metadata = value["display"]
            publish(data, metadata)

    def prepare_traceback(self, exc: BaseException) -> None:
        """Make IPython show the traceback from the cell's first line, without nbflow frames."""
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != self.filename:
            tb = tb.tb_next
        if tb is None:
            return
        itb = self.shell.InteractiveTB
        lines = itb.structured_traceback(type(exc), exc, tb)
        try:
            exc._render_traceback_ = lambda: lines  # type: ignore[attr-defined]
        except AttributeError:
            pass


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
    ipython.events.register("pre_run_cell", magics.session.pre_run_cell)
    _loaded[id(ipython)] = magics
    atexit.register(_finish_at_exit, magics.session)


def unload_ipython_extension(ipython: Any) -> None:
    """Finish the current run and forget the session (``%unload_ext nbflow``)."""
    magics = _loaded.pop(id(ipython), None)
    if magics is not None:
        ipython.events.unregister("pre_run_cell", magics.session.pre_run_cell)
        magics.session.finish()


def _finish_at_exit(session: NotebookSession) -> None:
    try:
        session.finish()
    except Exception:  # the interpreter is going away; nothing to report to
        log.debug("finishing the interactive run at exit failed", exc_info=True)
