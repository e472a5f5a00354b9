"""``nbflow execute <run-id>``: execute a flow run's notebook through papermill.

This is the only module that imports papermill.  One call of :func:`execute_flow_run`:

1. loads the flow run, its flow and its notebook (the deployment's stored snapshot, or
   ``flow_run.notebook_path`` for an ad-hoc run);
2. validates the run's parameters against the flow's typed parameters (a bad one fails
   the run with a message naming it, nothing is executed);
3. proposes Running and honours the gate: WAIT sleeps and proposes again, REJECT and
   ABORT end the process with exit code 0 (someone else owns the run);
4. executes the notebook with papermill, the parameters injected after the ``%%flow``
   cell (or papermill's ``parameters`` cell).  The kernel inherits this process's
   environment, so ``NBFLOW__FLOW_RUN_ID`` tells the ``%%flow`` magic to attach to this run
   and each ``%%task`` cell records its task run under it;
5. meanwhile an OS thread sends heartbeats and ships cell output as logs in batches;
6. stores the output notebook (``update_flow_run(output_path=...)`` plus an artifact of
   kind ``notebook``) and proposes the terminal state: Completed, or Failed with the
   failing cell, exception name, value and traceback.

SIGTERM proposes AwaitingRetry (the run is rescheduled), or Cancelled when the run is
Cancelling (a cancellation); the exit code is 0.  Any other BaseException is Crashed.

Through a server that is unreachable the run goes on: the HTTP client retries each write
for ``NBFLOW_API_RETRY_SECONDS`` (writes are idempotent), a failed heartbeat is only
logged, and cell output waits in the buffer.  Writes leave in order, and the terminal
state is always the process's last one: after the output notebook, the kernel's task
runs (its graceful exit flushes them), the logs and the notebook's own task run.

Every process of the run ends with it: after the kernel is shut down, whatever the
notebook started (in the kernel's process group, below it, or carrying the run's
``NBFLOW__FLOW_RUN_ID``) gets SIGTERM, then SIGKILL (:mod:`nbflow.runners.processes`),
before the terminal state is proposed.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from uuid import UUID, uuid4

import nbformat
import papermill
from papermill.exceptions import PapermillExecutionError, strip_color

from nbflow.client import Client, get_client
from nbflow.exceptions import NbflowError, NotFound, ParameterError
from nbflow.execution.kernels import kernel_pid, new_kernel_manager
from nbflow.execution.output import (
    completed_message,
    finish_output,
    output_notebook_path,
    save_output,
    write_output,
)
from nbflow.execution.papermill_engine import ENGINE_NAME, NbflowEngine, _Terminated
from nbflow.execution.reporter import HEARTBEAT_SECONDS, Reporter
from nbflow.notebook import document as nbs
from nbflow.runners.processes import flow_run_marker, run_processes, terminate_run_processes
from nbflow.schemas import FlowRun, SetStateStatus, TaskRun
from nbflow.states import (
    AwaitingRetry,
    Cancelled,
    Completed,
    Crashed,
    Failed,
    Running,
    State,
    StateType,
    now,
)

__all__ = [
    "ENGINE_NAME",
    "HEARTBEAT_SECONDS",
    "ExecutionResult",
    "execute_flow_run",
    "load_run_notebook",
    "output_notebook_path",
]

logger = logging.getLogger("nbflow.execution.executor")

#: Seconds the notebook's leftover processes get between SIGTERM and SIGKILL.
LEFTOVER_GRACE_SECONDS = 1.0
EXIT_OK, EXIT_FAILED = 0, 1


@dataclass(frozen=True)
class ExecutionResult:
    """What ``nbflow execute`` did: the exit code and the run's final state."""

    exit_code: int
    state: State | None
    output_path: str | None = None


# -- the notebook and its parameters -----------------------------------------------------


def load_run_notebook(client: Client, run: FlowRun) -> tuple[dict[str, Any], str | None]:
    """Return the run's notebook and its path: the deployment's snapshot or the run's path."""
    path: str | None = run.notebook_path
    if run.deployment_id is not None:
        deployment = client.read_deployment(run.deployment_id)
        if deployment.run_mode == "file" and deployment.notebook_path:
            # The file as it is now, relative to the run's working directory (the server root).
            try:
                nb = nbs.read_notebook(deployment.notebook_path)
            except nbs.NotebookFormatError as exc:
                raise NbflowError(
                    f"deployment {deployment.name!r} runs the file {deployment.notebook_path}, "
                    f"which this run cannot read ({exc}); give the runner the server root as "
                    "working_dir or set the deployment's run_mode to snapshot"
                ) from exc
            return _with_kernel(nb, deployment.kernel_name), deployment.notebook_path
        if deployment.notebook is not None:
            source = deployment.notebook_path or f"deployment {deployment.name}"
            nb = nbs.load_notebook(deployment.notebook, source=source)
            return _with_kernel(nb, deployment.kernel_name), deployment.notebook_path
        path = path or deployment.notebook_path
    if not path:
        raise NbflowError(
            f"flow run {run.id} has no notebook: neither a deployment snapshot nor a "
            "notebook_path; create it with `nbflow run NOTEBOOK` or from a deployment"
        )
    return nbs.read_notebook(path), path


def _with_kernel(nb: dict[str, Any], kernel_name: str | None) -> dict[str, Any]:
    """Return ``nb`` set to run on the deployment's kernelspec (None: the notebook's own)."""
    if not kernel_name:
        return nb
    metadata = dict(nb.get("metadata") or {})
    spec = dict(metadata.get("kernelspec") or {})
    if spec.get("name") != kernel_name:
        spec.update(name=kernel_name, display_name=kernel_name)
        spec.pop("language", None)
    metadata["kernelspec"] = spec
    return {**nb, "metadata": metadata}


def _schema_for(client: Client, run: FlowRun, nb: dict[str, Any]) -> dict[str, Any]:
    """Return the flow's parameters schema (from the store, else derived from the notebook)."""
    try:
        schema = client.read_flow(run.flow_id).parameters_schema
    except NotFound:
        schema = {}
    if schema.get("properties"):
        return schema
    return nbs.notebook_parameters_schema(nb)


# -- the run ---------------------------------------------------------------------------


def _propose(client: Client, run_id: UUID, state: State) -> tuple[SetStateStatus, State | None]:
    """Propose ``state``, sleeping and proposing again while the gate answers WAIT."""
    while True:
        try:
            result = client.set_flow_run_state(run_id, state)
        except NbflowError as exc:
            if getattr(exc, "status_code", None) != 403:
                raise
            # The run's token died with the run: someone else ended it (a cancel, a monitor).
            logger.info("flow run %s: %s refused: the run already ended (%s)", run_id, state, exc)
            return SetStateStatus.REJECT, None
        if result.status is not SetStateStatus.WAIT:
            if result.status is not SetStateStatus.ACCEPT:
                logger.info(
                    "flow run %s: %s %s (%s)", run_id, state.name, result.status, result.reason
                )
            return result.status, result.state
        delay = max(result.delay_seconds or 0.0, 0.05)
        logger.info("flow run %s: waiting %.1f s before running (%s)", run_id, delay, result.reason)
        time.sleep(delay)
        state = state.model_copy(update={"timestamp": now()})


def _stop_kernel(terminated: threading.Event, km: Any) -> None:
    """Stop the run as SIGTERM does: no further cell starts, the running cell is interrupted."""
    terminated.set()
    _interrupt(km)


def _interrupt(km: Any) -> None:
    try:
        km.interrupt_kernel()
    except Exception:
        logger.warning("could not interrupt the kernel", exc_info=True)


@contextmanager
def _sigterm_interrupts(terminated: threading.Event, km: Any) -> Iterator[None]:
    """On SIGTERM, set ``terminated`` and interrupt the kernel (the running cell stops).

    The cell ends with KeyboardInterrupt and no further cell starts, so papermill returns
    normally with the outputs so far; the caller then reschedules the run.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        _stop_kernel(terminated, km)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _failed_state(exc: PapermillExecutionError) -> State:
    return Failed(
        message=f"cell {exc.cell_index} (In [{exc.exec_count}]) raised {exc.ename}: {exc.evalue}",
        data={
            "cell_index": exc.cell_index,
            "exec_count": exc.exec_count,
            "ename": exc.ename,
            "evalue": exc.evalue,
            "traceback": [strip_color(line) for line in exc.traceback],
        },
    )


def execute_flow_run(
    flow_run_id: UUID,
    *,
    client: Client | None = None,
    kernel_manager: Any = None,
    kernel_env: Mapping[str, str] | None = None,
    kernel_cwd: str | None = None,
    kernel_client: Any = None,
    start_timeout: float = 60.0,
) -> ExecutionResult:
    """Execute the flow run's notebook and propose its states; return the exit code and state.

    ``kernel_manager`` is an already started ``jupyter_client`` kernel manager (a fast
    start: the kernel booted while this process imported papermill); it is used for this
    one run and shut down afterwards.  A kernel started before the run was known (a
    pooled executor) is given ``kernel_env`` and ``kernel_cwd`` before the first cell;
    ``kernel_client``, a client of it already connected and ready (a pooled executor
    connects while it waits), saves that set-up a new handshake.
    """
    client = client or get_client()
    try:
        setup = (dict(kernel_env or {}), kernel_cwd, kernel_client)
        return _execute(client, flow_run_id, kernel_manager, start_timeout, setup)
    finally:
        if kernel_client is not None:
            kernel_client.stop_channels()  # unused (a refused run, another kernel)
        if kernel_manager is not None and kernel_manager.has_kernel:
            _shutdown(kernel_manager, graceful=False)  # refused runs never used it


def _execute(
    client: Client,
    run_id: UUID,
    km: Any,
    start_timeout: float,
    setup: tuple[dict[str, str], str | None, Any],
) -> ExecutionResult:
    run = client.read_flow_run(run_id)
    try:
        nb, nb_path = load_run_notebook(client, run)
        schema = _schema_for(client, run, nb)
        parameters = nbs.validate_parameters(schema, run.parameters)
    except (ParameterError, nbs.NotebookFormatError, NbflowError) as exc:
        status, state = _propose(client, run_id, Failed(message=f"not started: {exc}"))
        logger.error("flow run %s: %s", run_id, exc)
        return ExecutionResult(EXIT_FAILED if status is SetStateStatus.ACCEPT else EXIT_OK, state)

    status, state = _propose(client, run_id, Running())
    if status is not SetStateStatus.ACCEPT:
        return ExecutionResult(EXIT_OK, state)

    flow_name = run.flow_name or (nbs.flow_name(nb, nb_path) if nb_path else "flow")
    out_path = output_notebook_path(run, flow_name)
    prepared = nbformat.from_dict(nbs.inject_parameters(nb, parameters))  # type: ignore[no-untyped-call]
    kernel_name = (nb.get("metadata", {}).get("kernelspec") or {}).get("name") or "python3"
    if km is not None and getattr(km, "kernel_name", kernel_name) != kernel_name:
        km.shutdown_kernel(now=True)  # the pre-started kernel is the wrong language
        km = None
    uses_magics = _uses_nbflow_magics(prepared)
    # The kernel works in the notebook's folder, as in JupyterLab (relative paths, sibling
    # notebooks of a pipeline), whether it starts now or was started before the run.
    notebook_dir = str(Path(nb_path).resolve().parent) if nb_path else None
    if km is None:
        km = new_kernel_manager(kernel_name)
        km.start_kernel(cwd=notebook_dir)
        if uses_magics:
            _configure_kernel(km, {}, None, start_timeout, load_nbflow=True)
    else:
        cwd = notebook_dir or setup[1]
        if not setup[0] and setup[2] is None and cwd == os.getcwd():
            cwd = None  # started here by this process, in this folder: already there
        if setup[0] or cwd or uses_magics:
            _configure_kernel(
                km, setup[0], cwd, start_timeout, load_nbflow=uses_magics, kc=setup[2]
            )

    try:
        return _execute_notebook(
            client, run, prepared, kernel_name, km, out_path, start_timeout, flow_name
        )
    finally:
        if km.has_kernel:
            _shutdown(km, graceful=False, flow_run_id=run_id)


def _execute_notebook(
    client: Client,
    run: FlowRun,
    prepared: Any,
    kernel_name: str,
    km: Any,
    out_path: Path,
    start_timeout: float,
    flow_name: str,
) -> ExecutionResult:
    run_id = run.id
    out_path.parent.mkdir(parents=True, exist_ok=True)
    reporter = Reporter(client, run_id)
    reporter.on_cancelling = functools.partial(_stop_kernel, reporter.terminated, km)
    reporter.interrupt = functools.partial(_interrupt, km)
    reporter.start()
    NbflowEngine.current = None
    whole = _start_notebook_task(client, run, prepared, flow_name)
    final: State
    code = EXIT_OK
    try:
        with _sigterm_interrupts(reporter.terminated, km):
            try:
                papermill.execute_notebook(
                    prepared,
                    str(out_path),
                    engine_name=ENGINE_NAME,
                    kernel_name=kernel_name,
                    request_save_on_cell_execute=False,
                    progress_bar=False,
                    start_timeout=int(start_timeout),
                    km=km,
                    nbflow_reporter=reporter,
                )
                final = Completed(message=completed_message(client, run_id, reporter))
            except PapermillExecutionError as exc:
                # papermill already wrote the output notebook with the error marked.
                if reporter.terminated.is_set():
                    raise _Terminated() from exc
                reporter.log("\n".join(strip_color(t) for t in exc.traceback), logging.ERROR)
                final = _failed_state(exc)
                code = EXIT_FAILED
    except _Terminated:
        if not out_path.exists():
            write_output(run, NbflowEngine.current, out_path)
        current = client.read_flow_run(run_id).state
        if current is not None and current.type is StateType.CANCELLING:
            final = Cancelled(message="cancelled: the run's process was asked to stop")
        else:
            final = AwaitingRetry(message="rescheduled: the run's process received SIGTERM")
    except BaseException as exc:
        _crashed(client, run, exc, reporter, km, out_path, whole, graceful=_uses_nbflow(prepared))
        raise
    reporter.close()
    # A graceful shutdown lets the kernel flush its recorder: every task run is in the
    # store before the run's terminal state is.
    _shutdown(km, graceful=_uses_nbflow(prepared), flow_run_id=run_id)
    if whole is not None:
        _end_notebook_task(client, whole, final)
    # The run's token dies with its terminal state: the output (its nbflow summary
    # rewritten to the final state) is recorded first, the terminal state is the last write.
    if out_path.exists():
        finish_output(client, run, final, out_path)
    _, state = _propose(client, run_id, final)
    return ExecutionResult(code, state, str(out_path) if out_path.exists() else None)


def _crashed(
    client: Client,
    run: FlowRun,
    exc: BaseException,
    reporter: Reporter,
    km: Any,
    out_path: Path,
    whole: TaskRun | None,
    *,
    graceful: bool,
) -> None:
    """Record what can be recorded of a run that broke, ending with Crashed.

    Each step is best effort (the server may have been unreachable for longer than the
    retry window): the exception that broke the run is the one that propagates.
    """
    steps = (
        lambda: save_output(client, run, NbflowEngine.current, out_path, partial=True),
        reporter.close,
        lambda: _shutdown(km, graceful=graceful, flow_run_id=run.id),
        lambda: _end_notebook_task(client, whole, Crashed()) if whole is not None else None,
        lambda: _propose(
            client, run.id, Crashed(message=f"nbflow execute crashed: {type(exc).__name__}: {exc}")
        ),
    )
    for step in steps:
        try:
            step()
        except Exception:
            logger.warning("flow run %s: while recording the crash", run.id, exc_info=True)


def _uses_nbflow_magics(nb: Any) -> bool:
    """Whether the notebook has ``%%flow`` or ``%%task`` cells (then the kernel loads nbflow)."""
    cells = [dict(c) for c in nb.cells]
    return bool(nbs.task_cells({"cells": cells})) or any(
        c.get("cell_type") == "code" and nbs.cell_source(c).lstrip().startswith("%%flow")
        for c in cells
    )


def _configure_kernel(
    km: Any,
    env: Mapping[str, str],
    cwd: str | None,
    timeout: float,
    *,
    load_nbflow: bool = False,
    kc: Any = None,
) -> None:
    """Give a kernel started ahead of its run the run's environment and directory.

    With ``load_nbflow`` it also loads the nbflow IPython extension, so a notebook whose
    ``%%flow`` / ``%%task`` cells rely on an auto-loaded extension runs without a
    ``%load_ext nbflow`` cell (loading twice is harmless).  ``kc``: a client of the kernel
    already connected and ready (no new handshake; it is stopped here).
    """
    code = (
        "import os as _nbflow_os\n"
        f"_nbflow_os.environ.update({dict(env)!r})\n"
        + (f"_nbflow_os.chdir({cwd!r})\n" if cwd else "")
        + "del _nbflow_os\n"
        "import nbflow.settings as _nbflow_settings\n"
        "_nbflow_settings.reload_settings()\n"
        "del _nbflow_settings\n"
        + (
            # Not through the extension manager: a later ``%load_ext nbflow`` cell then stays
            # silent instead of printing "already loaded" (the loader is idempotent).
            "import nbflow as _nbflow\n_nbflow.load_ipython_extension(get_ipython())\ndel _nbflow\n"
            if load_nbflow
            else ""
        )
    )
    ready = kc is not None
    if kc is None:
        kc = km.client()
        kc.start_channels()
    try:
        if not ready:
            kc.wait_for_ready(timeout=timeout)
        reply = kc.execute_interactive(code, silent=True, store_history=False, timeout=timeout)
        if reply["content"].get("status") != "ok":
            raise NbflowError(f"could not configure the kernel: {reply['content'].get('evalue')}")
    finally:
        kc.stop_channels()


def _start_notebook_task(client: Client, run: FlowRun, nb: Any, name: str) -> TaskRun | None:
    """Record a notebook without ``%%task`` cells as one task run (a one-task flow)."""
    if nbs.task_cells({"cells": [dict(c) for c in nb.cells]}):
        return None
    state = Running()
    task_run = TaskRun(
        flow_run_id=run.id,
        name=name,
        task_key="notebook",
        state=state,
        run_count=1,
        start_time=state.timestamp,
    )
    client.write_task_runs([task_run], [(task_run.id, state)])
    return task_run


def _end_notebook_task(client: Client, task_run: TaskRun, final: State) -> None:
    end = final if final.is_terminal else Cancelled(message=final.message)
    end = end.model_copy(update={"id": uuid4(), "timestamp": now()})
    start = task_run.start_time or end.timestamp
    done = task_run.model_copy(
        update={
            "state": end,
            "end_time": end.timestamp,
            "total_run_time": (end.timestamp - start).total_seconds(),
            "updated": end.timestamp,
        }
    )
    try:
        client.write_task_runs([done], [(done.id, end)])
    except Exception:
        logger.warning("flow run %s: could not record the notebook task", task_run.flow_run_id)


def _uses_nbflow(nb: Any) -> bool:
    """Whether the notebook loads nbflow in its kernel (then the kernel records task runs)."""
    return any("nbflow" in c.source or c.source.lstrip().startswith("%%") for c in nb.cells)


def _shutdown(
    km: Any, *, graceful: bool, timeout: float = 10.0, flow_run_id: UUID | None = None
) -> None:
    """Stop the kernel and every process it started; ``graceful`` lets it exit first.

    A graceful exit runs the kernel's atexit hooks (its recorder flushes).  jupyter_client's
    own graceful shutdown takes about a second more than the kernel needs, so ask and poll
    at a short interval, then kill what is left.  The notebook's processes are collected
    while the kernel still lives (a child that left the kernel's process group is found
    only below it) and terminated after it is gone.
    """
    pid = kernel_pid(km)
    marker = flow_run_marker(flow_run_id) if flow_run_id is not None else None
    tree = run_processes([pid], marker) if pid is not None else set()
    try:
        if graceful and km.has_kernel and km.is_alive():
            km.request_shutdown()
            deadline = time.monotonic() + timeout
            while km.is_alive() and time.monotonic() < deadline:
                time.sleep(0.02)
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    except Exception:
        logger.warning("the kernel did not shut down cleanly", exc_info=True)
    if pid is not None or flow_run_id is not None:
        left = terminate_run_processes(
            [pid] if pid is not None else [],
            marker,
            LEFTOVER_GRACE_SECONDS,
            known=tree,
        )
        if left:
            logger.info("stopped %d process(es) the notebook left running", len(left))
