"""The kernel's interactive flow run: the one owner of its start, cancel and finish.

A ``%%flow`` cell starts a run (finishing the previous one); a ``%%task`` cell with no
current run starts an implicit one named after the notebook.  When ``NBFLOW__FLOW_RUN_ID``
is set (a batch run under ``nbflow execute``) the cells report to that run instead: its
flow-run states stay with the executing process, so finishing only flushes the recorder.
Everything that changes the run's lifecycle goes through :class:`InteractiveRun`.

A task cell that fails ends the run Failed at once; the next task cell resumes it: a new
run of the same flow linked to the failed one (``retry_of``), in which the tasks that
completed in this kernel with unchanged inputs and outputs are recorded ``Cached`` (see
:mod:`nbflow.notebook.resume`).  A resumed run completes by itself once every task of the
run it resumes and every ``%%task`` cell of the notebook as saved has a Completed or
Cached task run in it that nothing made stale since.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic_core import to_jsonable_python

from nbflow.engine import FlowRunEngine
from nbflow.notebook.arguments import FlowOptions
from nbflow.notebook.repair import BatchCells
from nbflow.notebook.resume import DoneTask, ResumePoint, notebook_task_keys
from nbflow.orchestration.repair import RepairPlan
from nbflow.schemas import Artifact, FlowRunCreate, TaskRun
from nbflow.settings import get_settings
from nbflow.states import Cached, Cancelled, Completed, Failed, Pending, State, StateType, now

if TYPE_CHECKING:
    from nbflow.client.base import Client
    from nbflow.notebook.display import RunDisplay
    from nbflow.notebook.kernel import KernelNotebook

__all__ = ["InteractiveRun"]

log = logging.getLogger("nbflow.notebook.magics")


class InteractiveRun:
    """The current flow run of one kernel, and the task runs its cells made in it."""

    def __init__(
        self,
        kernel: KernelNotebook,
        display: RunDisplay,
        task_label: Callable[[str], str],
    ) -> None:
        self.kernel, self.display = kernel, display
        self._task_label = task_label  # task key -> the name a failure message shows
        self.flow: FlowOptions | None = None  # of the last %%flow cell; implicit runs reuse it
        self.parameters: dict[str, Any] = {}
        self.parameters_schema: dict[str, Any] = {}
        self.engine: FlowRunEngine | None = None
        self.batch = False
        #: Of a batch run: persisting its task cells, restoring them when it is a repair.
        self.batch_cells: BatchCells | None = None
        self.task_states: dict[str, State] = {}  # task key -> its latest state in this run
        self.task_run_ids: dict[str, UUID] = {}  # task key -> its latest task run in this run
        self._task_running = False
        self._done: dict[str, DoneTask] = {}  # task key -> its success in this run
        self._stale: set[str] = set()  # task keys whose inputs changed since they ran
        #: The failed run the next task cell resumes, and what it may reuse.
        self.resume_point: ResumePoint | None = None
        #: Of a resumed run: the task keys (``a|b``: either) it completes with.
        self._expected: list[str] = []

    @property
    def flow_run_id(self) -> UUID | None:
        """The id of the current run, or None between runs."""
        return self.engine.flow_run.id if self.engine is not None else None

    def client(self) -> Client:
        """The current run's client, else the configured one."""
        if self.engine is not None:
            return self.engine.client
        from nbflow.client import get_client

        return get_client()

    # -- start ---------------------------------------------------------------------------
    def start(
        self, flow: FlowOptions, parameters: dict[str, Any], schema: dict[str, Any]
    ) -> FlowRunEngine:
        """Finish the current run, then start the run of a ``%%flow`` cell."""
        self.finish()
        self.resume_point = None
        self.flow, self.parameters, self.parameters_schema = flow, parameters, schema
        return self._start()

    def ensure(self, rerun_key: str | None = None) -> FlowRunEngine:
        """Return the current run, else start one: resuming the failed run, or an implicit one.

        ``rerun_key`` is the task about to run: a resumed run does not restore it.
        """
        if self.engine is not None and self.engine.final_state is None and not self.batch:
            self._notice_end_from_outside(self.engine)
        if self.engine is None or self.engine.final_state is not None:
            point, self.resume_point = self.resume_point, None
            return self._start(point, rerun_key)
        return self.engine

    def _notice_end_from_outside(self, engine: FlowRunEngine) -> None:
        """End our side of a run that was cancelled or ended elsewhere (panel, API, CLI)."""
        try:
            current = engine.client.read_flow_run(engine.flow_run.id).state
        except Exception:
            log.debug("could not read the interactive run's state", exc_info=True)
            return
        if current is None:
            return
        if current.type is StateType.CANCELLING:
            self.finish(Cancelled(message="cancelled between cells"))
        elif current.is_terminal:
            engine.ended_elsewhere(current)
            self.finish()

    def _start(
        self, resume: ResumePoint | None = None, rerun_key: str | None = None
    ) -> FlowRunEngine:
        path = self.kernel.path()
        name = self.flow.name if self.flow else (path.stem if path else "interactive")
        settings = get_settings()
        restored: list[DoneTask] = []
        self._expected = []
        if settings.flow_run_id is not None:
            from nbflow.client import get_client

            client = get_client()
            run = client.read_flow_run(settings.flow_run_id)
            engine = FlowRunEngine(client, run, mode="batch")
            self.engine = engine
            self.parameters = dict(run.parameters) or self.parameters
            self.batch = True
            plan = None
            if run.retry_of is not None:  # a repair's plan is in its first state
                plan = RepairPlan.from_states(client.read_flow_run_states(run.id))
            self.batch_cells = BatchCells(plan, settings.batch_results_max_bytes)
        elif resume is not None:
            engine = self._start_resumed(resume)
            self.engine = engine
            self._snapshot(engine, path)
            restored = resume.reusable(self.kernel.shell.user_ns, rerun_key or "")
            shell = self.kernel.shell
            self._expected = list(
                dict.fromkeys([*resume.known, *notebook_task_keys(path, shell.transform_cell)])
            )
        else:
            engine = FlowRunEngine.start(
                flow_name=name,
                parameters=self.parameters,
                parameters_schema=self.parameters_schema,
                source=str(path) if path else None,
                mode="interactive",
            )
            self.engine = engine
            self._snapshot(engine, path)
        if settings.kernel_id and settings.flow_run_id is None:
            self._record_kernel(engine, settings.kernel_id)
        self.task_states.clear()
        self.task_run_ids.clear()
        self._done.clear()
        self._stale.clear()
        self.display.show(
            engine.flow_run.id,
            name,
            run_name=engine.flow_run.name,
            state=engine.flow_run.state or Completed(),
            on_cancel=functools.partial(self.cancel_from_widget, engine.flow_run.id),
        )
        for task in restored:
            self._restore(engine, task, resume)
        return engine

    def _start_resumed(self, resume: ResumePoint) -> FlowRunEngine:
        """Start the next run of the failed run's flow, linked to it (``retry_of``)."""
        from nbflow.client import get_client

        client = get_client()
        run = client.create_flow_run(
            FlowRunCreate(
                flow_id=resume.flow_id,
                parameters=to_jsonable_python(self.parameters, fallback=repr),
                mode="interactive",
                retry_of=resume.failed_run_id,
                # Claimed by this kernel at creation, as FlowRunEngine.start does.
                state=Pending(message=f"resumes flow run {resume.failed_run_id} in this kernel"),
            )
        )
        return FlowRunEngine.start(flow_run_id=run.id, mode="interactive", client=client)

    def _restore(self, engine: FlowRunEngine, task: DoneTask, resume: ResumePoint | None) -> None:
        """Record ``task`` as Cached in ``engine``'s run: it completed earlier in this kernel."""
        state = Cached(
            message=(
                f"completed in flow run {task.source_flow_run_id} (task run "
                f"{task.source_task_run_id}); its code, inputs and outputs are unchanged in "
                "this kernel"
            ),
            data={
                "source_flow_run_id": str(task.source_flow_run_id),
                "source_task_run_id": str(task.source_task_run_id),
                "resumed_from": str(resume.failed_run_id) if resume else None,
            },
        )
        self.record_cached(engine, task, state)

    def record_cached(self, engine: FlowRunEngine, task: DoneTask, state: State) -> TaskRun:
        """Record ``task`` in ``engine``'s run as ended ``state`` (Cached) without running it."""
        stamp = now()
        run = TaskRun(
            flow_run_id=engine.flow_run.id,
            name=task.name,
            task_key=task.key,
            upstream=self.upstream_ids(task.upstream),
            inputs=list(task.inputs),
            outputs=list(task.outputs),
            start_time=stamp,
            end_time=stamp,
            state=state,
        )
        engine.sink.transition(run, state)
        self.task_states[task.key] = state
        self.task_run_ids[task.key] = run.id
        self._done[task.key] = task
        return run

    def _record_kernel(self, engine: FlowRunEngine, kernel_id: str) -> None:
        """Record ``kernel:<id>`` as the run's infrastructure: the server that started this
        kernel then interrupts it on cancel and crashes the run when the kernel dies."""
        run_id = engine.flow_run.id
        try:
            engine.client.update_flow_run(run_id, infrastructure_id=f"kernel:{kernel_id}")
        except Exception as exc:  # the run goes on; a cancel then waits for the next heartbeat
            log.warning("could not record kernel %s with flow run %s: %s", kernel_id, run_id, exc)

    def _snapshot(self, engine: FlowRunEngine, path: Path | None) -> None:
        """Store the notebook as saved on disk with the run (the flow's source)."""
        if path is None:
            return
        try:
            client = engine.client
            if not get_settings().uses_server:
                # A server takes only paths under its root; the snapshot below carries the notebook.
                client.update_flow_run(engine.flow_run.id, notebook_path=str(path))
            if not path.is_file():
                return
            notebook = json.loads(path.read_text(encoding="utf-8"))
            client.create_artifact(
                Artifact(
                    flow_run_id=engine.flow_run.id,
                    key="notebook-snapshot",
                    kind="notebook",
                    uri=str(path),
                    data=notebook,
                )
            )
        except Exception as exc:  # a snapshot is a convenience; the run goes on without it
            log.warning("could not snapshot %s: %s", path, exc)

    # -- task runs -----------------------------------------------------------------------
    def upstream_ids(self, task_keys: Collection[str]) -> list[UUID]:
        """Return the task runs of this run that the given task keys last made."""
        return [self.task_run_ids[k] for k in sorted(task_keys) if k in self.task_run_ids]

    def run_task(
        self,
        engine: FlowRunEngine,
        fn: Callable[..., Any],
        *,
        task_key: str,
        upstream_keys: Collection[str],
        inputs: Collection[str],
        outputs: Collection[str],
        **options: Any,
    ) -> tuple[TaskRun, State, Any]:
        """Run task ``task_key`` in ``engine`` (see ``FlowRunEngine.run_task``) and record it.

        An interrupt (Ctrl-C, the kernel's Interrupt) cancels and finishes the run.
        """
        self._task_running = True
        try:
            with engine.activate():
                task_run, state, value = engine.run_task(
                    fn,
                    task_key=task_key,
                    inputs=inputs,
                    outputs=outputs,
                    upstream=self.upstream_ids(upstream_keys),
                    **options,
                )
        except KeyboardInterrupt:
            self._task_running = False
            engine.cancel()
            self.finish()
            raise
        finally:
            self._task_running = False
        self.task_states[task_key] = state
        self.task_run_ids[task_key] = task_run.id
        if state.is_final_success:
            self._done[task_key] = DoneTask(
                key=task_key,
                name=task_run.name,
                inputs=tuple(inputs),
                outputs=tuple(outputs),
                upstream=tuple(sorted(upstream_keys)),
                source_flow_run_id=engine.flow_run.id,
                source_task_run_id=task_run.id,
            )
        else:
            self._done.pop(task_key, None)
        return task_run, state, value

    def settle(self, task_key: str, stale: Collection[str]) -> None:
        """Act on how a task cell ended: a failure ends the run; a resumed run may complete.

        ``stale`` are the task keys the cell's new outputs made stale.
        """
        state = self.task_states.get(task_key)
        if self.engine is None or self.batch or state is None:
            return
        self._stale.discard(task_key)
        self._stale.update(stale)
        if state.type in (StateType.FAILED, StateType.CRASHED):
            self._fail(task_key, state)
        elif self._expected and all(
            any(self._is_done(k) for k in alternatives.split("|"))
            for alternatives in self._expected
        ):
            self.finish()

    def _is_done(self, task_key: str) -> bool:
        state = self.task_states.get(task_key)
        return state is not None and state.is_final_success and task_key not in self._stale

    def _fail(self, task_key: str, state: State) -> None:
        """End the run Failed now, keeping what the next task cell may resume from."""
        engine = self.engine
        assert engine is not None
        known = list(dict.fromkeys([*self._expected, *self.task_states]))
        done = [t for k, t in self._done.items() if k not in self._stale]
        point = ResumePoint.take(
            engine.flow_run.id, engine.flow_run.flow_id, known, done, self.kernel.shell.user_ns
        )
        label = self._task_label(task_key)
        self.finish(Failed(message=f"task {label!r} failed: {state.message or state.name}"))
        self.resume_point = point

    # -- cancel and finish ---------------------------------------------------------------
    def cancel(self) -> None:
        """Cancel the current run cooperatively (the widget's button, ``%nbflow cancel``)."""
        if self.engine is not None:
            self.engine.cancel()

    def cancel_from_widget(self, flow_run_id: UUID) -> None:
        """Handle the widget's Cancel button (of the widget of run ``flow_run_id``).

        Comm messages reach the kernel between cells, so this usually runs while no task
        cell runs: the run is then finished (Cancelled) at once.  In JupyterLab the panel's
        extension also cancels through the server the moment the button is clicked (the
        server interrupts the busy kernel); this late click then finds the run ended, or a
        newer run, which it leaves alone.
        """
        if self.flow_run_id != flow_run_id:
            return
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
                failed = [self._task_label(k) for k, s in self.task_states.items() if s.type in bad]
                if failed:
                    state = Failed(message=f"task(s) failed: {', '.join(failed)}")
            final = engine.finish(state)
        else:
            engine.recorder.flush(10)
        self.display.detach()
        return final
