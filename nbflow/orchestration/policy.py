"""The flow-run transition policy: one table of rules, evaluated in order.

``evaluate`` is pure: it looks at a run and a proposed state and answers ACCEPT, REJECT
(with the current state), WAIT (with a delay) or ABORT, plus the bookkeeping an accepted
transition implies.  The store applies the answer inside one database transaction, so the
same rules hold for the embedded client, the server and every runner.

The rules, in order (the first that matches decides):

========================  ==========================================================
rule                      answer
========================  ==========================================================
duplicate transition id   ACCEPT again, nothing changes (safe client retries)
force                     ACCEPT anything
no current state          ACCEPT anything (a new run)
claim once                ABORT →PENDING from PENDING, RUNNING, CANCELLING, CANCELLED
                          (except Pending→Submitting: the claimer starts the infrastructure)
already running           ABORT RUNNING→RUNNING
terminal is final         REJECT terminal→anything (a retry is a new run, ``retry_of`` set)
cancelling ends           REJECT CANCELLING→anything but CANCELLED or CRASHED
claimed first             ABORT →RUNNING from anything but PENDING: a run must be claimed
                          (Pending, Submitting) before it runs, so a replacement pod or a
                          stale executor of a rescheduled run never runs it a second time
late from scheduled       REJECT Late unless the run is a plain ``Scheduled``
not before its time       WAIT →RUNNING while ``expected_start_time`` is in the future
otherwise                 ACCEPT
========================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from nbflow.schemas import FlowRun, OrchestrationResult, SetStateStatus
from nbflow.states import TERMINAL_TYPES, State, StateType, now

__all__ = ["RULES", "Decision", "Rule", "evaluate"]


@dataclass(frozen=True)
class Decision:
    """The gate's answer plus the run fields an accepted transition sets."""

    result: OrchestrationResult
    #: Fields of the run to update (empty unless accepted and new).
    run_updates: dict[str, Any] = field(default_factory=dict)
    #: False for a replayed transition id: nothing must be written.
    is_new: bool = True
    rule: str = ""

    @property
    def status(self) -> SetStateStatus:
        """ACCEPT, REJECT, WAIT or ABORT."""
        return self.result.status


@dataclass(frozen=True)
class _Ctx:
    run: FlowRun
    current: State | None
    proposed: State
    at: datetime


#: A rule answers None (does not apply) or (status, reason, delay_seconds).
_Outcome = tuple[SetStateStatus, str, float | None]


@dataclass(frozen=True)
class Rule:
    """One row of the policy table."""

    name: str
    check: Callable[[_Ctx], _Outcome | None]


def _is_type(state: State | None, *types: StateType) -> bool:
    return state is not None and state.type in types


def _claim_once(c: _Ctx) -> _Outcome | None:
    if c.proposed.is_named(StateType.PENDING, "Submitting") and (
        c.current is not None and c.current.is_named(StateType.PENDING, "Pending")
    ):
        return None  # the claimer moves on to starting the infrastructure
    if c.proposed.type is StateType.PENDING and _is_type(
        c.current, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING, StateType.CANCELLED
    ):
        return (
            SetStateStatus.ABORT,
            f"run is already {c.current}; it can be claimed only once",
            None,
        )
    return None


def _already_running(c: _Ctx) -> _Outcome | None:
    if c.proposed.type is StateType.RUNNING and _is_type(c.current, StateType.RUNNING):
        return (SetStateStatus.ABORT, "run is already Running (another process executes it)", None)
    return None


def _terminal_is_final(c: _Ctx) -> _Outcome | None:
    if c.current is not None and c.current.type in TERMINAL_TYPES:
        return (
            SetStateStatus.REJECT,
            f"run is {c.current.type.value.lower()} and a finished run never changes; "
            "retry it (a new linked run) instead",
            None,
        )
    return None


def _cancelling_ends(c: _Ctx) -> _Outcome | None:
    if _is_type(c.current, StateType.CANCELLING) and c.proposed.type not in (
        StateType.CANCELLED,
        StateType.CRASHED,
    ):
        return (
            SetStateStatus.REJECT,
            "run is being cancelled; it may only become Cancelled or Crashed",
            None,
        )
    return None


def _claimed_first(c: _Ctx) -> _Outcome | None:
    if c.proposed.type is StateType.RUNNING and not _is_type(c.current, StateType.PENDING):
        return (
            SetStateStatus.ABORT,
            f"run is {c.current}; the run must be claimed first (Pending) before it runs",
            None,
        )
    return None


def _late_from_scheduled(c: _Ctx) -> _Outcome | None:
    if c.proposed.is_named(StateType.SCHEDULED, "Late") and not (
        c.current is not None and c.current.is_named(StateType.SCHEDULED, "Scheduled")
    ):
        return (SetStateStatus.REJECT, "only a plain Scheduled run can become Late", None)
    return None


def _not_before_its_time(c: _Ctx) -> _Outcome | None:
    if c.proposed.type is not StateType.RUNNING or not _is_type(
        c.current, StateType.SCHEDULED, StateType.PENDING
    ):
        return None
    expected = c.run.expected_start_time
    if expected is not None and expected > c.at:
        delay = (expected - c.at).total_seconds()
        return (SetStateStatus.WAIT, f"run is scheduled for {expected.isoformat()}", delay)
    return None


RULES: tuple[Rule, ...] = (
    Rule("claim once", _claim_once),
    Rule("already running", _already_running),
    Rule("terminal is final", _terminal_is_final),
    Rule("cancelling ends", _cancelling_ends),
    Rule("claimed first", _claimed_first),
    Rule("late from scheduled", _late_from_scheduled),
    Rule("not before its time", _not_before_its_time),
)


def bookkeeping(run: FlowRun, current: State | None, proposed: State) -> dict[str, Any]:
    """Return the run fields that accepting ``proposed`` over ``current`` sets."""
    ts = proposed.timestamp
    updates: dict[str, Any] = {"state": proposed, "updated": ts}
    if current is not None and current.type is StateType.RUNNING:
        elapsed = max(0.0, (ts - current.timestamp).total_seconds())
        updates["total_run_time"] = run.total_run_time + elapsed
    if proposed.type is StateType.RUNNING and not _is_type(current, StateType.RUNNING):
        updates["run_count"] = run.run_count + 1
        if run.start_time is None:
            updates["start_time"] = ts
    if proposed.type in TERMINAL_TYPES:
        updates["end_time"] = ts
    elif run.end_time is not None:
        updates["end_time"] = None
    if proposed.type is StateType.SCHEDULED and proposed.scheduled_time is not None:
        updates["expected_start_time"] = proposed.scheduled_time
    return updates


def evaluate(
    run: FlowRun,
    proposed: State,
    *,
    force: bool = False,
    accepted_ids: Container[UUID] = (),
    at: datetime | None = None,
) -> Decision:
    """Decide whether ``run`` may enter ``proposed``; see the module docstring for the table."""
    current = run.state
    if proposed.id in accepted_ids:
        return Decision(
            OrchestrationResult(
                status=SetStateStatus.ACCEPT, state=proposed, reason="transition already accepted"
            ),
            is_new=False,
            rule="duplicate transition id",
        )
    if not force and current is not None:
        ctx = _Ctx(run=run, current=current, proposed=proposed, at=at or now())
        for rule in RULES:
            outcome = rule.check(ctx)
            if outcome is not None:
                status, reason, delay = outcome
                return Decision(
                    OrchestrationResult(
                        status=status,
                        state=current if status is SetStateStatus.REJECT else None,
                        reason=reason,
                        delay_seconds=delay,
                    ),
                    rule=rule.name,
                )
    return Decision(
        OrchestrationResult(status=SetStateStatus.ACCEPT, state=proposed),
        run_updates=bookkeeping(run, current, proposed),
        rule="force" if force else "accept",
    )
