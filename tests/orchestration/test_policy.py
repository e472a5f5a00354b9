"""The flow-run transition policy, one row per rule (see nbflow/orchestration/policy.py)."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from nbflow import states as S
from nbflow.orchestration.policy import RULES, evaluate
from nbflow.schemas import FlowRun, SetStateStatus
from nbflow.states import State, StateType, now

ACCEPT, REJECT, WAIT, ABORT = (
    SetStateStatus.ACCEPT,
    SetStateStatus.REJECT,
    SetStateStatus.WAIT,
    SetStateStatus.ABORT,
)


def run_in(state: State | None, **fields: object) -> FlowRun:
    return FlowRun(name="r", flow_id=uuid4(), state=state, **fields)  # type: ignore[arg-type]


PAST = now() - timedelta(minutes=5)
FUTURE = now() + timedelta(minutes=5)

# (rule, current state, proposed state, expected status)
ROWS = [
    # no current state: a new run accepts its first state
    ("new run", None, S.Scheduled(), ACCEPT),
    ("new run", None, S.Running(), ACCEPT),
    # claim once: ->PENDING from PENDING, RUNNING, CANCELLING, CANCELLED is refused
    ("claim once", S.Scheduled(PAST), S.Pending(), ACCEPT),
    ("claim once", S.Late(PAST), S.Pending(), ACCEPT),
    ("claim once", S.AwaitingRetry(PAST), S.Pending(), ACCEPT),
    ("claim once", S.Pending(), S.Pending(), ABORT),
    ("claim once", S.Submitting(), S.Pending(), ABORT),
    ("claim once", S.Running(), S.Pending(), ABORT),
    ("claim once", S.Cancelling(), S.Pending(), ABORT),
    ("claim once", S.Cancelled(), S.Pending(), ABORT),
    # already running: RUNNING->RUNNING is refused
    ("already running", S.Running(), S.Running(), ABORT),
    ("already running", S.Pending(), S.Running(), ACCEPT),
    # terminal is final: nothing reopens a finished run (a retry is a new linked run)
    ("terminal is final", S.Completed(), S.Running(), REJECT),
    ("terminal is final", S.Failed(), S.Scheduled(), REJECT),
    ("terminal is final", S.Crashed(), S.Failed(), REJECT),
    ("terminal is final", S.Cancelled(), S.Running(), REJECT),
    ("terminal is final", S.Completed(), S.Completed(), REJECT),
    ("terminal is final", S.Failed(), S.AwaitingRetry(), REJECT),
    ("terminal is final", S.Crashed(), S.AwaitingRetry(), REJECT),
    ("terminal is final", S.Cancelled(), S.AwaitingRetry(), REJECT),
    ("terminal is final", S.Completed(), S.Pending(), REJECT),
    # claimed first: RUNNING only from PENDING (a claimed run), never straight from
    # Scheduled / Late / AwaitingRetry / Paused (a replacement pod, a stale executor)
    ("claimed first", S.Scheduled(PAST), S.Running(), ABORT),
    ("claimed first", S.Late(PAST), S.Running(), ABORT),
    ("claimed first", S.AwaitingRetry(PAST), S.Running(), ABORT),
    ("claimed first", S.Paused(), S.Running(), ABORT),
    ("claimed first", S.Scheduled(PAST), S.Retrying(), ABORT),
    ("claimed first", S.Pending(), S.Running(), ACCEPT),
    ("claimed first", S.Submitting(), S.Running(), ACCEPT),
    # cancelling may only become Cancelled or Crashed
    ("cancelling ends", S.Cancelling(), S.Cancelled(), ACCEPT),
    ("cancelling ends", S.Cancelling(), S.Crashed(), ACCEPT),
    ("cancelling ends", S.Cancelling(), S.Running(), REJECT),
    ("cancelling ends", S.Cancelling(), S.Completed(), REJECT),
    ("cancelling ends", S.Cancelling(), S.Failed(), REJECT),
    # Late only from a plain Scheduled
    ("late from scheduled", S.Scheduled(PAST), S.Late(PAST), ACCEPT),
    ("late from scheduled", S.AwaitingRetry(PAST), S.Late(PAST), REJECT),
    ("late from scheduled", S.Late(PAST), S.Late(PAST), REJECT),
    ("late from scheduled", S.Pending(), S.Late(PAST), REJECT),
    ("late from scheduled", S.Running(), S.Late(PAST), REJECT),
    # running states move on freely
    ("otherwise", S.Running(), S.Completed(), ACCEPT),
    ("otherwise", S.Running(), S.Failed(), ACCEPT),
    ("otherwise", S.Running(), S.AwaitingRetry(), ACCEPT),
    ("otherwise", S.Running(), S.Cancelling(), ACCEPT),
    ("already running", S.Running(), S.Retrying(), ABORT),
    ("otherwise", S.Scheduled(PAST), S.Pending(), ACCEPT),
]


@pytest.mark.parametrize(
    ("rule", "current", "proposed", "expected"),
    ROWS,
    ids=[f"{r[0]}: {r[1]} -> {r[2]}" for r in ROWS],
)
def test_rule(rule: str, current: State | None, proposed: State, expected: SetStateStatus) -> None:
    decision = evaluate(run_in(current), proposed)
    assert decision.status is expected, decision.result.reason
    if expected is REJECT:
        assert decision.result.state == current, "REJECT answers with the current state"
        assert decision.run_updates == {}
    if expected is ABORT:
        assert decision.result.state is None and decision.result.reason
    if expected is ACCEPT:
        assert decision.result.state == proposed
        assert decision.run_updates["state"] == proposed


def test_every_rule_has_a_row() -> None:
    covered = {row[0] for row in ROWS}
    assert {rule.name for rule in RULES} <= covered | {"not before its time"}


def test_not_before_its_time_waits_with_delay() -> None:
    at = now()
    future = at + timedelta(minutes=5)
    run = run_in(S.Pending(), expected_start_time=future)
    decision = evaluate(run, S.Running(), at=at)
    assert decision.status is WAIT
    assert decision.result.delay_seconds == pytest.approx(300)
    # on time: accepted
    assert evaluate(run_in(S.Pending(), expected_start_time=PAST), S.Running()).status is ACCEPT


def test_force_accepts_anything_with_bookkeeping() -> None:
    run = run_in(S.Completed(), end_time=now())
    decision = evaluate(run, S.Running(), force=True)
    assert decision.status is ACCEPT and decision.rule == "force"
    assert decision.run_updates["run_count"] == 1
    assert decision.run_updates["end_time"] is None


def test_repeated_transition_id_is_idempotent() -> None:
    proposed = S.Running()
    run = run_in(proposed)  # the run already accepted this very state
    decision = evaluate(run, proposed, accepted_ids={proposed.id})
    assert decision.status is ACCEPT
    assert decision.is_new is False and decision.run_updates == {}
    # the same state with a new id is a different transition: refused
    assert evaluate(run, S.Running()).status is ABORT


def test_bookkeeping_counts_runs_and_run_time() -> None:
    t0 = now()
    running = State(type=StateType.RUNNING, timestamp=t0)
    start = evaluate(run_in(S.Pending()), running).run_updates
    assert start["run_count"] == 1 and start["start_time"] == t0 and "end_time" not in start

    run = run_in(running, run_count=1, start_time=t0)
    done = State(type=StateType.COMPLETED, timestamp=t0 + timedelta(seconds=2.5))
    end = evaluate(run, done).run_updates
    assert end["end_time"] == done.timestamp
    assert end["total_run_time"] == pytest.approx(2.5)
    assert "run_count" not in end

    # rescheduled (SIGTERM): AwaitingRetry from Running; reclaimed, the next Running counts
    # a second run and keeps start_time
    running_run = run_in(running, run_count=1, start_time=t0)
    retry = S.AwaitingRetry(now())
    updates = evaluate(running_run, retry).run_updates
    assert updates["expected_start_time"] == retry.scheduled_time
    assert updates["total_run_time"] >= 0
    reclaimed = run_in(S.Pending(), run_count=1, start_time=t0, total_run_time=2.5)
    again = evaluate(reclaimed, S.Running()).run_updates
    assert again["run_count"] == 2 and "start_time" not in again


def test_force_reopens_a_terminal_run_for_an_administrator() -> None:
    # force (users and admins only; run tokens may never use it) bypasses every rule
    decision = evaluate(run_in(S.Cancelled(), end_time=now()), S.AwaitingRetry(), force=True)
    assert decision.status is ACCEPT and decision.run_updates["end_time"] is None
