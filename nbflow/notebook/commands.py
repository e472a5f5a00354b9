"""The ``%nbflow`` line magic: ``status``, ``runs``, ``show``, ``load``, ``cancel``, ``finish``, ``run``, ``deploy``.

``run`` and ``deploy`` talk to the server; they live in :mod:`nbflow.notebook.server_commands`.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any
from uuid import UUID

from IPython.core.error import UsageError

from nbflow.exceptions import TransitionRejected
from nbflow.schemas import FlowRunFilter, TaskRunFilter

if TYPE_CHECKING:
    from nbflow.notebook.magics import NotebookSession

__all__ = ["dispatch"]

USAGE = """%nbflow status           the current interactive flow run and its tasks
%nbflow runs [N]         the N most recent flow runs (default 20)
%nbflow show RUN_ID      one flow run with its task runs
%nbflow load RUN_ID [TASK ...]
                         load the persisted outputs of a run's task cells (all, or
                         the named ones) into this kernel's namespace
%nbflow cancel [RUN_ID]  cancel a flow run (default: the current one)
%nbflow finish           end the current interactive run now
%nbflow deploy [--name N] [--cron EXPR [--timezone TZ] | --interval S] [--runner R] [-p k=v]
                         deploy this notebook (as saved) to the server
%nbflow run [--runner R] [-p k=v]
                         run this notebook as a batch run on the server"""


def dispatch(session: NotebookSession, line: str) -> Any:
    """Run one ``%nbflow`` subcommand."""
    words = shlex.split(line)
    if not words:
        print(USAGE)
        return None
    command, args = words[0], words[1:]
    handler = _COMMANDS.get(command)
    if handler is None:
        raise UsageError(f"%nbflow {command}: unknown subcommand\n{USAGE}")
    return handler(session, args)


def _client(session: NotebookSession) -> Any:
    return session.run.client()


def _run_id(session: NotebookSession, text: str) -> UUID:
    client = _client(session)
    try:
        return UUID(text)
    except ValueError:
        pass
    matches = [
        r.id for r in client.read_flow_runs(FlowRunFilter(limit=1000)) if str(r.id).startswith(text)
    ]
    if len(matches) != 1:
        raise UsageError(
            f"{text!r}: {'no' if not matches else 'more than one'} flow run id starts so"
        )
    found: UUID = matches[0]
    return found


def _status(session: NotebookSession, args: list[str]) -> None:
    text = session.display.status()
    print("no interactive flow run yet: run a %%flow or %%task cell" if text is None else text)


def _runs(session: NotebookSession, args: list[str]) -> None:
    limit = int(args[0]) if args else 20
    runs = _client(session).read_flow_runs(FlowRunFilter(limit=limit))
    if not runs:
        print("no flow runs")
    for run in runs:
        state = run.state.name if run.state else "-"
        start = run.start_time.strftime("%Y-%m-%d %H:%M:%S") if run.start_time else ""
        print(
            f"{run.id}  {run.flow_name or '':<20} {run.name:<24} {state:<12} {run.mode:<11} {start}"
        )


def _show(session: NotebookSession, args: list[str]) -> None:
    if not args:
        raise UsageError("%nbflow show RUN_ID")
    client = _client(session)
    run = client.read_flow_run(_run_id(session, args[0]))
    print(f"flow run {run.id} ({run.name}) of {run.flow_name}: {run.state}")
    print(f"  mode {run.mode}, parameters {run.parameters}")
    for task in client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id])):
        state = str(task.state) if task.state else "-"
        print(f"  {task.name:<24} {state:<40} runs={task.run_count} {task.total_run_time:.3f}s")


def _load(session: NotebookSession, args: list[str]) -> None:
    from nbflow.notebook.load import load_run_outputs

    if not args:
        raise UsageError("%nbflow load RUN_ID [TASK ...]")
    client = _client(session)
    run = client.read_flow_run(_run_id(session, args[0]))
    print(load_run_outputs(client, run, session.shell.user_ns, args[1:]).text())


def _cancel(session: NotebookSession, args: list[str]) -> None:
    current = session.run.flow_run_id
    run_id = _run_id(session, args[0]) if args else current
    if run_id is None:
        raise UsageError("%nbflow cancel RUN_ID (there is no current interactive run)")
    if run_id == current:
        session.run.cancel()
        final = session.run.finish()
        print(f"flow run {run_id}: {final}")
        return
    client = _client(session)
    # The one cancel path: Cancelled at once if not started, else Cancelling for its owner.
    try:
        result = client.cancel_flow_run(run_id, message="cancelled from %nbflow")
    except TransitionRejected as exc:
        raise UsageError(f"%nbflow cancel: flow run {run_id}: {exc.reason}") from None
    print(f"flow run {run_id}: {result.state.name if result.state else result.status.value}")


def _finish(session: NotebookSession, args: list[str]) -> None:
    batch = session.run.batch and session.run.engine is not None
    final = session.run.finish()
    if final is not None:
        print(f"flow run finished: {final}")
        return
    if batch:  # `nbflow execute` ends the run; a notebook's finish cell has nothing to say
        return
    widget = session.display.widget
    last = widget.flow_state if widget is not None else None
    if widget is not None and last is not None and last.is_terminal:
        print(f"nothing to finish: flow run {widget.flow_run_id} already ended {last.name}")
    else:
        print("nothing to finish: no interactive flow run is running")


def _deploy(session: NotebookSession, args: list[str]) -> None:
    from nbflow.notebook.server_commands import deploy_command

    deploy_command(session, args)


def _run(session: NotebookSession, args: list[str]) -> None:
    from nbflow.notebook.server_commands import run_command

    run_command(session, args)


_COMMANDS = {
    "status": _status,
    "runs": _runs,
    "show": _show,
    "load": _load,
    "cancel": _cancel,
    "finish": _finish,
    "run": _run,
    "deploy": _deploy,
}
