"""Notebook pipelines: ``run_notebook`` runs a notebook as a child flow run and returns its outputs.

A child is an ordinary batch run of the notebook, created the way ``nbflow run`` creates
one (:func:`nbflow.notebook.batch_runs.create_notebook_run`) with ``parent_flow_run_id`` and
``parent_task_run_id`` naming the flow run and task run that called it, and launched with
a runner (``subprocess`` unless told otherwise).  The caller owns the child's process: it
follows it, and stops it when the child or the caller's own run turns Cancelling (the
lifecycle's cancel of a parent cancels its unfinished children), when the caller is
interrupted, or when ``timeout`` passes.

In a run the server dispatched (its process holds a run token, which may not launch
runs), the server starts the child instead: ``POST /flow_runs/{id}/children`` creates it
on the parent's runner with the parent's job variables, the server's dispatcher launches
it, and the caller follows it and cancels it when it must stop.

A child declares what it hands back with ``%%flow NAME --outputs a,b``; the values are read
from the persisted outputs of its completed ``%%task`` cells (the results every batch run
persists for a repair, :mod:`nbflow.notebook.load`), so an output must be assigned in a
``%%task`` cell.  A child that does not complete raises :class:`NotebookRunFailed` naming
the run, its failing cell and the error, which fails the calling task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from nbflow.exceptions import NbflowError, ValidationError
from nbflow.notebook import document as nbs
from nbflow.schemas import FlowRun, TaskRunFilter
from nbflow.states import StateType

if TYPE_CHECKING:
    from nbflow.client.base import Client
    from nbflow.notebook.batch_runs import NotebookRunSpec
    from nbflow.runners.base import Runner

__all__ = ["NotebookRun", "NotebookRunFailed", "NotebookRunFuture", "run_notebook"]

logger = logging.getLogger("nbflow.notebook.pipeline")

#: Seconds between looks at the child's process and at the child's and parent's states.
POLL_SECONDS = 0.2
#: Seconds a stopped child's process gets between SIGTERM and SIGKILL.
CANCEL_GRACE_SECONDS = 10.0
#: Children run at once by ``submit``/``map`` outside a flow whose task runner says otherwise.
DEFAULT_MAX_WORKERS = 4


@dataclass(frozen=True)
class NotebookRun:
    """A completed child run of a notebook and the outputs its ``%%flow --outputs`` declared."""

    flow_run: FlowRun
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> UUID:
        """The child's flow run id."""
        return self.flow_run.id


class NotebookRunFailed(NbflowError):
    """A child notebook run did not complete: names the run, its failing cell and the error."""

    def __init__(
        self,
        path: str,
        flow_run: FlowRun,
        *,
        task: str | None = None,
        cell_index: int | None = None,
        ename: str | None = None,
        evalue: str | None = None,
        problem: str | None = None,
    ) -> None:
        self.path, self.flow_run = path, flow_run
        self.task, self.cell_index, self.ename, self.evalue = task, cell_index, ename, evalue
        state = flow_run.state.name if flow_run.state else "without a state"
        where = []
        if cell_index is not None:
            where.append(f"cell {cell_index}")
        if task:
            where.append(f"task {task!r}")
        text = f"child notebook {path} (flow run {flow_run.id}) ended {state}"
        if ename:
            text += f": {' '.join(where) or 'a cell'} raised {ename}: {evalue}"
        elif problem or (flow_run.state and flow_run.state.message):
            text += f": {problem or (flow_run.state.message if flow_run.state else '')}"
        super().__init__(f"{text} (see `nbflow runs show {flow_run.id}`)")


# -- the calling run ---------------------------------------------------------------------


def _caller() -> tuple[UUID | None, UUID | None, int | None]:
    """Return the calling flow run, task run, and the flow's task runner's worker count."""
    from nbflow.engine.context import current_flow_run, current_task_run

    task = current_task_run()
    engine = current_flow_run()
    flow_run_id = task.flow_run_id if task is not None else None
    if flow_run_id is None and engine is not None:
        flow_run_id = engine.flow_run.id
    workers = getattr(engine.task_runner, "max_workers", None) if engine is not None else None
    return flow_run_id, task.task_run.id if task is not None else None, workers


# -- one child ---------------------------------------------------------------------------


class _Child:
    """A child run being followed: ``stop`` asks the follower to cancel it."""

    active: set[_Child] = set()
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.done = threading.Event()

    def __enter__(self) -> _Child:
        with _Child._lock:
            _Child.active.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with _Child._lock:
            _Child.active.discard(self)
        self.done.set()

    @classmethod
    def stop_all(cls, wait: float) -> None:
        """Cancel every child this process follows and wait (up to ``wait`` s) for them."""
        with cls._lock:
            children = list(cls.active)
        for child in children:
            child.stop.set()
        deadline = time.monotonic() + wait
        for child in children:
            child.done.wait(max(0.0, deadline - time.monotonic()))


def _run(
    path: str | Path,
    parameters: Mapping[str, Any] | None,
    runner_name: str | None,
    job_variables: Mapping[str, Any] | None,
    timeout: float | None,
    parents: tuple[UUID | None, UUID | None],
    child: _Child,
) -> NotebookRun:
    from nbflow.client import get_client
    from nbflow.notebook.batch_runs import prepare_notebook

    with child:
        spec = prepare_notebook(path)
        flow_cell = nbs.find_flow_cell(nbs.read_notebook(spec.path), source=str(spec.path))
        outputs = _declared_outputs(flow_cell.args if flow_cell is not None else ())
        client = get_client()
        if parents[0] is not None and _holds_run_token(client):
            final = _dispatch(
                client, spec, parameters, runner_name, job_variables, timeout, parents, child
            )
        else:
            final = _launch(
                client, spec, parameters, runner_name, job_variables, timeout, parents, child
            )
        if final.state is None or final.state.type is not StateType.COMPLETED:
            raise _failure(client, str(spec.path), final)
        return NotebookRun(final, _read_outputs(client, str(spec.path), final, outputs))


def _holds_run_token(client: Client) -> bool:
    """Whether this process reports with a run token (a run the server dispatched)."""
    from nbflow.client.http import RUN_TOKEN_PREFIX, HTTPClient
    from nbflow.settings import get_settings

    token = get_settings().api_token or ""
    return isinstance(client, HTTPClient) and token.startswith(RUN_TOKEN_PREFIX)


def _launch(
    client: Client,
    spec: NotebookRunSpec,
    parameters: Mapping[str, Any] | None,
    runner_name: str | None,
    job_variables: Mapping[str, Any] | None,
    timeout: float | None,
    parents: tuple[UUID | None, UUID | None],
    child: _Child,
) -> FlowRun:
    """Create the child and run it here, through a runner this process owns."""
    from nbflow.client.http import HTTPClient
    from nbflow.notebook.batch_runs import create_notebook_run
    from nbflow.runners import get_runner

    name = runner_name or "subprocess"
    cls = get_runner(name)
    # A subprocess child's output goes to the log, not into the caller's cell.
    extra: dict[str, Any] = {"output": _child_output} if name == "subprocess" else {}
    if isinstance(client, HTTPClient):
        # The child's process (a container, a pod) reports with its own run token, never
        # with the token of the user who runs the pipeline.
        extra["token_factory"] = lambda run: client.mint_run_token(run.id)
    runner = cls(client=client, **extra)
    try:
        run = create_notebook_run(
            client,
            spec,
            dict(parameters or {}),
            runner=name,
            job_variables=job_variables,
            parent_flow_run_id=parents[0],
            parent_task_run_id=parents[1],
            message=f"launched by run_notebook from flow run {parents[0]}"
            if parents[0]
            else "launched by run_notebook",
        )
        infrastructure_id = runner.submit(run)
        client.update_flow_run(run.id, infrastructure_id=infrastructure_id)
        logger.info("child flow run %s of %s launched (%s)", run.id, spec.path, name)
        try:
            _follow(client, runner, run.id, infrastructure_id, parents[0], timeout, child)
        except BaseException:
            runner.cancel(client.read_flow_run(run.id), grace_seconds=CANCEL_GRACE_SECONDS)
            raise
        return client.read_flow_run(run.id)
    finally:
        runner.close()


def _dispatch(
    client: Client,
    spec: NotebookRunSpec,
    parameters: Mapping[str, Any] | None,
    runner_name: str | None,
    job_variables: Mapping[str, Any] | None,
    timeout: float | None,
    parents: tuple[UUID | None, UUID | None],
    child: _Child,
) -> FlowRun:
    """Have the server start the child (its dispatcher launches it) and follow it.

    A run the server dispatched holds a run token, which may not launch runs itself: the
    server creates the child on this run's runner with this run's job variables.
    """
    from nbflow.client.http import HTTPClient

    assert isinstance(client, HTTPClient) and parents[0] is not None
    request: dict[str, Any] = {
        "notebook": nbs.read_notebook(spec.path),
        "notebook_path": str(spec.path),
        "parameters": dict(parameters or {}),
        "parent_task_run_id": str(parents[1]) if parents[1] else None,
        "idempotency_key": uuid4().hex,
    }
    if runner_name is not None:
        request["runner"] = runner_name
    if job_variables is not None:
        request["job_variables"] = dict(job_variables)
    run = client.start_child_run(parents[0], request)
    logger.info("child flow run %s of %s scheduled on the server", run.id, spec.path)
    deadline = time.monotonic() + timeout if timeout is not None else None
    try:
        while True:
            current = client.read_flow_run(run.id)
            if current.state is not None and current.state.is_terminal:
                final: FlowRun = current
                return final
            if child.stop.wait(POLL_SECONDS):
                raise NbflowError(
                    f"child flow run {run.id} was stopped: its caller was interrupted"
                )
            if deadline is not None and time.monotonic() > deadline:
                raise NbflowError(f"child flow run {run.id} timed out after {timeout} s")
    except BaseException:
        _cancel_dispatched(client, run.id)
        raise


def _cancel_dispatched(client: Client, run_id: UUID) -> None:
    """Cancel a child the server runs and wait a little for it to end (best effort)."""
    from nbflow.exceptions import TransitionRejected

    try:
        client.cancel_flow_run(run_id, message="its caller (run_notebook) stopped")
    except TransitionRejected:
        return  # already finished (or cancelled with its parent)
    except Exception:
        logger.warning("could not cancel child flow run %s", run_id, exc_info=True)
        return
    deadline = time.monotonic() + CANCEL_GRACE_SECONDS
    while time.monotonic() < deadline:
        state = client.read_flow_run(run_id).state
        if state is not None and state.is_terminal:
            return
        time.sleep(POLL_SECONDS)


def _child_output(line: str) -> None:
    logger.debug("child: %s", line.rstrip())


def _declared_outputs(args: Iterable[str]) -> tuple[str, ...]:
    from nbflow.notebook.arguments import parse_flow_outputs

    return parse_flow_outputs(list(args))


def _follow(
    client: Client,
    runner: Runner,
    run_id: UUID,
    infrastructure_id: str,
    parent_id: UUID | None,
    timeout: float | None,
    child: _Child,
) -> None:
    """Wait for the child's process; stop it when it or its parent turns Cancelling."""
    deadline = time.monotonic() + timeout if timeout is not None else None
    while runner.wait(infrastructure_id, timeout=POLL_SECONDS) is None:
        if child.stop.is_set():
            raise NbflowError(f"child flow run {run_id} was stopped: its caller was interrupted")
        if deadline is not None and time.monotonic() > deadline:
            raise NbflowError(f"child flow run {run_id} timed out after {timeout} s")
        state = client.read_flow_run(run_id).state
        if state is not None and state.type is StateType.CANCELLING:
            raise NbflowError(f"child flow run {run_id} was cancelled")
        if parent_id is not None:
            parent = client.read_flow_run(parent_id).state
            if parent is not None and (parent.type is StateType.CANCELLING or parent.is_terminal):
                raise NbflowError(f"child flow run {run_id}: its parent {parent_id} is {parent}")


def _failure(client: Client, path: str, run: FlowRun) -> NotebookRunFailed:
    """Name the child's failing cell and error (the executor's Failed state carries them)."""
    data = (run.state.data if run.state is not None else None) or {}
    task_runs = client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))
    failed = [
        t.name
        for t in sorted(task_runs, key=lambda t: t.created)
        if t.state is not None and t.state.type in (StateType.FAILED, StateType.CRASHED)
    ]
    return NotebookRunFailed(
        path,
        run,
        task=failed[-1] if failed else None,
        cell_index=data.get("cell_index"),
        ename=data.get("ename"),
        evalue=data.get("evalue"),
    )


def _read_outputs(
    client: Client, path: str, run: FlowRun, names: tuple[str, ...]
) -> dict[str, Any]:
    """Read the declared outputs from the child's persisted task-cell results."""
    if not names:
        return {}
    from nbflow.notebook.load import load_run_outputs

    namespace: dict[str, Any] = {}
    report = load_run_outputs(client, run, namespace)
    missing = [n for n in names if n not in namespace]
    if missing:
        raise NotebookRunFailed(
            path,
            run,
            problem=(
                f"declared output(s) {', '.join(missing)} not found in its persisted %%task "
                "results: assign each output in a %%task cell (plain cells are not "
                f"persisted), as a picklable value. What was loaded:\n{report.text()}"
            ),
        )
    return {n: namespace[n] for n in names}


# -- the public function ----------------------------------------------------------------


class NotebookRunFuture:
    """A child run started by ``run_notebook.submit``: ``result()`` waits for its NotebookRun."""

    def __init__(self, future: Future[NotebookRun], child: _Child, path: str) -> None:
        self._future, self._child, self.path = future, child, path

    def result(self, timeout: float | None = None) -> NotebookRun:
        """Wait for the child; raise its :class:`NotebookRunFailed` if it did not complete.

        An interrupt while waiting (a cancelled parent's kernel) stops every child this
        process follows before it propagates.
        """
        try:
            return self._future.result(timeout)
        except KeyboardInterrupt:
            _Child.stop_all(CANCEL_GRACE_SECONDS + 5)
            raise

    def done(self) -> bool:
        """Whether the child finished (completed or not)."""
        return self._future.done()

    def cancel(self) -> None:
        """Stop the child: cancelled through the lifecycle, its process killed."""
        if not self._future.cancel():
            self._child.stop.set()


class RunNotebook:
    """``run_notebook(path, parameters)``, with ``.submit`` and ``.map`` for fan-out."""

    def __init__(self) -> None:
        self._pools: dict[int, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()

    def __call__(
        self,
        path: str | Path,
        parameters: Mapping[str, Any] | None = None,
        *,
        runner: str | None = None,
        job_variables: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> NotebookRun:
        """Run the notebook as a child flow run of the caller; return it with its outputs.

        ``path`` is relative to the working directory (a notebook flow's: its folder).
        Raises :class:`NotebookRunFailed` when the child does not complete.
        """
        flow_run_id, task_run_id, _ = _caller()
        child = _Child()
        try:
            return _run(
                path,
                parameters,
                runner,
                job_variables,
                timeout,
                (flow_run_id, task_run_id),
                child,
            )
        except KeyboardInterrupt:
            _Child.stop_all(CANCEL_GRACE_SECONDS + 5)
            raise

    def submit(
        self,
        path: str | Path,
        parameters: Mapping[str, Any] | None = None,
        *,
        runner: str | None = None,
        job_variables: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        max_workers: int | None = None,
    ) -> NotebookRunFuture:
        """Start the child in the background; at most ``max_workers`` children run at once.

        ``max_workers`` defaults to the calling flow's task runner's, else
        :data:`DEFAULT_MAX_WORKERS`.
        """
        flow_run_id, task_run_id, workers = _caller()
        size = max_workers or workers or DEFAULT_MAX_WORKERS
        if size < 1:
            raise ValidationError("max_workers", size, "must be at least 1", "e.g. 4")
        child = _Child()
        future = self._pool(size).submit(
            _run,
            path,
            parameters,
            runner,
            job_variables,
            timeout,
            (flow_run_id, task_run_id),
            child,
        )
        return NotebookRunFuture(future, child, str(path))

    def map(
        self,
        path: str | Path,
        parameters: Iterable[Mapping[str, Any]],
        *,
        runner: str | None = None,
        job_variables: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        max_workers: int | None = None,
    ) -> list[NotebookRunFuture]:
        """Fan out: one child of ``path`` per parameters mapping, started with :meth:`submit`."""
        return [
            self.submit(
                path,
                p,
                runner=runner,
                job_variables=job_variables,
                timeout=timeout,
                max_workers=max_workers,
            )
            for p in parameters
        ]

    def _pool(self, size: int) -> ThreadPoolExecutor:
        with self._lock:
            pool = self._pools.get(size)
            if pool is None:
                pool = ThreadPoolExecutor(size, thread_name_prefix="nbflow-child")
                self._pools[size] = pool
            return pool


#: Run a notebook as a child flow run: ``run_notebook(path, parameters)``.
run_notebook = RunNotebook()
