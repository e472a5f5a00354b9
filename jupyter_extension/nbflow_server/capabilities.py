"""What a run token may do: the one table of run-token capabilities.

A run's own process (``nbflow execute`` and the kernel it starts) holds a token for that
run only (:mod:`nbflow_server.tokens`).  It reports on its run and reads what it needs to
execute it; it never creates, relaunches, reconfigures or forces anything.  This module is
the only statement of that: the ``endpoint`` decorator looks every endpoint up in
:data:`CAPABILITIES` (an endpoint not listed refuses run tokens), the handlers apply the
checks below, and docs/security.md shows the same tables (a test compares them).

Rules that hold for every endpoint a token may use:

- the run must exist and not be terminal: a token stops working once its run is
  Completed, Failed, Crashed or Cancelled (so the terminal state is the run process's
  last write); a replay of the terminal proposal itself is still answered;
- every id it names (path, body, query) belongs to its run; another run's id is 403.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from uuid import UUID

from nbflow.schemas import FlowRun
from nbflow.states import TERMINAL_TYPES, State, StateType

__all__ = [
    "CAPABILITIES",
    "PATCHABLE_FIELDS",
    "TRANSITIONS",
    "Capability",
    "RunAccess",
    "Transition",
    "Verdict",
    "capability_of",
    "check_proposal",
    "check_update",
    "endpoints_markdown",
    "expired_reason",
    "is_own_output",
    "outside_output_reason",
    "own_output_name",
    "transitions_markdown",
]


class RunAccess(enum.Enum):
    """How an endpoint treats a run token."""

    #: Refused: only the user's Jupyter token opens it.
    NONE = "none"
    #: Allowed when the ``flow_run_id`` in the path is the token's run.
    PATH = "path"
    #: Allowed; the handler checks every object it touches belongs to the token's run.
    CHECKED = "checked"
    #: Allowed when the path's ``flow_run_id`` is the token's run or one of its child runs
    #: (``parent_flow_run_id`` is the token's run: a pipeline following its children).
    CHILD = "child"


@dataclass(frozen=True)
class Capability:
    """One endpoint a run token may use, and what it may do there."""

    #: ``Handler.method`` of the endpoint (what the ``endpoint`` decorator looks up).
    endpoint: str
    #: The operation as documented: ``POST /flow_runs/{flow_run_id}/set_state``.
    operation: str
    access: RunAccess
    #: What the token may do there, in words (docs/security.md).
    allows: str
    #: Still answered after the run ended, for a replay of the run's last transition
    #: (the handler applies :func:`check_proposal`, which refuses anything else).
    replayable: bool = False


#: Every endpoint a run token may use; anything else answers 403 to a run token.
CAPABILITIES: tuple[Capability, ...] = (
    Capability(
        "FlowRunHandler.get",
        "GET /flow_runs/{flow_run_id}",
        RunAccess.CHILD,
        "read its own run and its child runs",
    ),
    Capability(
        "FlowRunHandler.patch",
        "PATCH /flow_runs/{flow_run_id}",
        RunAccess.PATH,
        "set only `output_path`, to its own output notebook (see below)",
    ),
    Capability(
        "FlowRunSetStateHandler.post",
        "POST /flow_runs/{flow_run_id}/set_state",
        RunAccess.PATH,
        "propose its run's state along the transitions table below; never `force`",
        replayable=True,
    ),
    Capability(
        "ChildRunsHandler.post",
        "POST /flow_runs/{flow_run_id}/children",
        RunAccess.PATH,
        "start a child run of its run (`run_notebook`): a notebook and its parameters; the "
        "child runs on its run's runner with its run's job variables (choosing `runner` or "
        "`job_variables` is 403) and may register the child's flow only when it is new or "
        "its parameters are unchanged",
    ),
    Capability(
        "FlowRunCancelHandler.post",
        "POST /flow_runs/{flow_run_id}/cancel",
        RunAccess.CHILD,
        "cancel its child runs (not its own run, not another run)",
    ),
    Capability(
        "FlowRunHeartbeatHandler.post",
        "POST /flow_runs/{flow_run_id}/heartbeat",
        RunAccess.PATH,
        "heartbeat its run",
    ),
    Capability(
        "FlowRunStatesHandler.get",
        "GET /flow_runs/{flow_run_id}/states",
        RunAccess.PATH,
        "read its run's state history",
    ),
    Capability(
        "FlowRunGraphHandler.get",
        "GET /flow_runs/{flow_run_id}/graph",
        RunAccess.PATH,
        "read its run's task graph",
    ),
    Capability(
        "FlowRunOutputHandler.get",
        "GET /flow_runs/{flow_run_id}/output",
        RunAccess.PATH,
        "read its run's output notebook",
    ),
    Capability(
        "FlowHandler.get",
        "GET /flows/{flow_id}",
        RunAccess.CHECKED,
        "read its run's flow",
    ),
    Capability(
        "DeploymentHandler.get",
        "GET /deployments/{deployment_id}",
        RunAccess.CHECKED,
        "read its run's deployment (the notebook snapshot it executes)",
    ),
    Capability(
        "TaskRunsHandler.get",
        "GET /task_runs",
        RunAccess.CHECKED,
        "list its run's task runs, or one child run's (`flow_run_ids` must be exactly its "
        "run or one of its child runs)",
    ),
    Capability(
        "TaskRunBatchHandler.post",
        "POST /task_runs/batch",
        RunAccess.CHECKED,
        "write task runs of its run: each `flow_run_id` is its run and each task-run id "
        "is new or already its run's (another run's id is 403, never a move)",
    ),
    Capability(
        "TaskRunStatesHandler.get",
        "GET /task_runs/{task_run_id}/states",
        RunAccess.CHECKED,
        "read the state history of its run's task runs",
    ),
    Capability(
        "LogBatchHandler.post",
        "POST /logs/batch",
        RunAccess.CHECKED,
        "write logs of its run (a `task_run_id`, if any, is not another run's)",
    ),
    Capability(
        "LogsHandler.get",
        "GET /logs",
        RunAccess.CHECKED,
        "read its run's logs",
    ),
    Capability(
        "ArtifactsHandler.post",
        "POST /artifacts",
        RunAccess.CHECKED,
        "store artifacts of its run (a `task_run_id`, if any, is not another run's); "
        "a `uri` must name its own output notebook",
    ),
    Capability(
        "ArtifactsHandler.get",
        "GET /artifacts",
        RunAccess.CHECKED,
        "list its run's artifacts (`flow_run_id` must be its run)",
    ),
)

_BY_ENDPOINT = {c.endpoint: c for c in CAPABILITIES}


def capability_of(endpoint: str) -> Capability | None:
    """Return what a run token may do with the endpoint ``Handler.method`` (None: nothing)."""
    return _BY_ENDPOINT.get(endpoint)


#: The only flow-run fields a run token may PATCH (``nbflow execute`` records its output).
PATCHABLE_FIELDS = frozenset({"output_path"})


def check_update(run: FlowRun, changes: Mapping[str, Any]) -> tuple[str, str] | None:
    """Return ``(field, why)`` when a run token may not PATCH ``changes`` (None: it may)."""
    for name in sorted(changes.keys() - PATCHABLE_FIELDS):
        return (
            f"body.{name}",
            f"a run token may not change body.{name} of flow run {run.id}; it may set only "
            f"{', '.join(sorted(PATCHABLE_FIELDS))} (the user's token changes the rest)",
        )
    output_path = changes.get("output_path")
    if "output_path" in changes and (output_path is None or not is_own_output(run, output_path)):
        return ("body.output_path", outside_output_reason(run, "body.output_path", output_path))
    return None


# -- state proposals ---------------------------------------------------------------------


class Verdict(enum.Enum):
    """What a listed state proposal gets (one not listed is 403)."""

    #: Passed to the orchestration gate: a transition a run process makes.
    ALLOW = "allow"
    #: Passed to the gate, which refuses it (REJECT/ABORT, nothing changes): a race the
    #: process lost (a cancel, a reschedule, a second process), so it can stop cleanly.
    #: The transition-table test checks the gate does refuse each of these.
    GATE = "gate"


@dataclass(frozen=True)
class Transition:
    """A proposal a run token may make from a current state type."""

    current: StateType
    #: The proposed state type; for SCHEDULED only the name ``AwaitingRetry``.
    proposed: StateType
    verdict: Verdict
    why: str

    @property
    def proposed_name(self) -> str:
        """The name docs show for the proposal."""
        if self.proposed is StateType.SCHEDULED:
            return "AwaitingRetry"
        return self.proposed.value.title()


_P, _R, _C = StateType.PENDING, StateType.RUNNING, StateType.CANCELLING
_A, _G = Verdict.ALLOW, Verdict.GATE

#: The transitions a run process makes (``nbflow/execution/executor.py``); nothing else.
TRANSITIONS: tuple[Transition, ...] = (
    Transition(_P, StateType.RUNNING, _A, "start (the run was claimed: Pending or Submitting)"),
    Transition(_P, StateType.FAILED, _A, "not started: bad parameters or notebook"),
    Transition(_P, StateType.CRASHED, _A, "the process crashed while starting"),
    Transition(_R, StateType.COMPLETED, _A, "every cell ran"),
    Transition(_R, StateType.FAILED, _A, "a cell raised"),
    Transition(_R, StateType.CRASHED, _A, "the process crashed"),
    Transition(_R, StateType.CANCELLED, _A, "cancelled from inside the run"),
    Transition(_R, StateType.SCHEDULED, _A, "SIGTERM: rescheduled (AwaitingRetry)"),
    Transition(_C, StateType.CANCELLED, _A, "stopped after a cancel"),
    Transition(_C, StateType.CRASHED, _A, "crashed while cancelling"),
    Transition(_R, StateType.RUNNING, _G, "a second process for the run (ABORT)"),
    Transition(
        StateType.SCHEDULED, StateType.RUNNING, _G, "a stale process of a rescheduled run (ABORT)"
    ),
    Transition(_C, StateType.RUNNING, _G, "cancelled before it started (REJECT)"),
    Transition(_C, StateType.COMPLETED, _G, "finished while being cancelled (REJECT)"),
    Transition(_C, StateType.FAILED, _G, "failed while being cancelled (REJECT)"),
    Transition(_C, StateType.SCHEDULED, _G, "SIGTERM while being cancelled (REJECT)"),
)

_VERDICTS = {(t.current, t.proposed): t.verdict for t in TRANSITIONS}


def check_proposal(run: FlowRun, proposed: State, *, force: bool) -> str | None:
    """Return why a run token may not propose ``proposed`` for its ``run`` (None: it may).

    A replay of the run's current state (same transition id: a client retrying a write
    whose answer it lost) is always passed on; the gate answers it without a change.
    """
    current = run.state
    if force:
        return "a run token never forces a state; the user's token may"
    if current is not None and proposed.id == current.id:
        return None
    if current is None:
        return f"flow run {run.id} has no state yet; a run token reports only on a claimed run"
    expired = expired_reason(run)
    if expired is not None:
        return expired
    # Of the SCHEDULED states a run's process proposes only AwaitingRetry (not Late, ...).
    named = proposed.type is not StateType.SCHEDULED or proposed.name == "AwaitingRetry"
    verdict = _VERDICTS.get((current.type, proposed.type)) if named else None
    if verdict is None:
        return (
            f"a run token may not move its run from {current.name} to {proposed.name}; "
            "a run's process proposes only Running, its terminal state, or AwaitingRetry "
            "on SIGTERM (see docs/security.md)"
        )
    return None


def expired_reason(run: FlowRun) -> str | None:
    """Return why the token of ``run`` no longer works (None: it still does)."""
    if run.state is not None and run.state.type in TERMINAL_TYPES:
        return (
            f"flow run {run.id} is {run.state.name}: its run token stopped working when the "
            "run ended (a run's terminal state is its process's last write)"
        )
    return None


# -- the run's own output location -------------------------------------------------------


def own_output_name(flow_run_id: UUID) -> str:
    """Return the file name ``nbflow execute`` gives a run's output notebook."""
    return f"{flow_run_id}.ipynb"


def is_own_output(run: FlowRun, location: str) -> bool:
    """Whether ``location`` names ``run``'s own output notebook.

    That is a local path (plain or ``file://``) whose file name is ``<run id>.ipynb`` --
    where ``nbflow execute`` writes it, ``$NBFLOW_HOME/outputs/<flow>/<run id>.ipynb`` --
    or exactly the ``output_path`` the run already has (one a user chose).  A URL of any
    other scheme is not: a run that cannot share the server's disk sends the notebook
    itself in the artifact's ``data``.
    """
    if run.output_path is not None and location == run.output_path:
        return True
    path = location.removeprefix("file://")
    if "://" in path or "\x00" in path:
        return False
    return PurePosixPath(path.replace("\\", "/")).name == own_output_name(run.id)


# -- the tables as docs/security.md shows them --------------------------------------------


def outside_output_reason(run: FlowRun, field: str, value: object) -> str:
    """Return the 403 message of a location that is not the run's own output notebook."""
    return (
        f"{field}={value!r} is not the output notebook of flow run {run.id}: a run token may "
        f"name only a local file called {own_output_name(run.id)} (where nbflow execute "
        "writes it) or the run's current output_path; send the notebook itself in `data`"
    )


def endpoints_markdown() -> str:
    """Return the endpoint table in Markdown, as docs/security.md shows it."""
    lines = ["| endpoint | a run token may |", "|---|---|"]
    lines += [f"| `{c.operation}` | {c.allows} |" for c in CAPABILITIES]
    return "\n".join(lines) + "\n"


def transitions_markdown() -> str:
    """Return the transition table in Markdown, as docs/security.md shows it."""
    lines = ["| run is | proposal | answer | when |", "|---|---|---|---|"]
    answers = {Verdict.ALLOW: "passed to the gate", Verdict.GATE: "the gate refuses it"}
    for t in TRANSITIONS:
        current = t.current.value.title()
        lines.append(f"| {current} | {t.proposed_name} | {answers[t.verdict]} | {t.why} |")
    return "\n".join(lines) + "\n"
