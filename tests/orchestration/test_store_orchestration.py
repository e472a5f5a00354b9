"""``set_flow_run_state`` end to end: the policy's answers applied (or not) by the store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from nbflow.exceptions import FlowRunNotFound, ObjectAlreadyExists
from nbflow.orchestration.store import Store
from nbflow.schemas import Flow, FlowRun, FlowRunCreate, SetStateStatus
from nbflow.states import (
    AwaitingRetry,
    Cancelled,
    Cancelling,
    Completed,
    Late,
    Pending,
    Running,
    Scheduled,
    now,
)

ACCEPT, REJECT, WAIT, ABORT = (
    SetStateStatus.ACCEPT,
    SetStateStatus.REJECT,
    SetStateStatus.WAIT,
    SetStateStatus.ABORT,
)


def new_run(store: Store, **kwargs: object) -> FlowRun:
    flow = store.create_flow(Flow(name="f"))
    return store.create_flow_run(FlowRunCreate(flow_id=flow.id, **kwargs))  # type: ignore[arg-type]


def history(store: Store, run: FlowRun) -> list[str]:
    return [s.name for s in store.read_flow_run_states(run.id)]


def test_a_full_run_is_accepted_with_its_bookkeeping(store: Store) -> None:
    run = new_run(store)
    pending, running, done = Pending(), Running(), Completed()
    for state in (pending, running):
        result = store.set_flow_run_state(run.id, state)
        assert result.status is ACCEPT and result.state == state
    done = Completed(timestamp=running.timestamp + timedelta(seconds=2.5))
    assert store.set_flow_run_state(run.id, done).status is ACCEPT
    stored = store.read_flow_run(run.id)
    assert stored.state == done
    assert stored.run_count == 1
    assert stored.start_time == running.timestamp
    assert stored.end_time == done.timestamp
    assert stored.total_run_time == pytest.approx(2.5)
    assert history(store, run) == ["Scheduled", "Pending", "Running", "Completed"]


def test_reject_keeps_the_current_state(store: Store) -> None:
    run = new_run(store, state=Running())
    done = Completed()
    store.set_flow_run_state(run.id, done)
    result = store.set_flow_run_state(run.id, Running())
    assert result.status is REJECT and result.state == done and result.reason
    assert store.read_flow_run(run.id).state == done
    assert history(store, run) == ["Running", "Completed"]


def test_claiming_twice_aborts(store: Store) -> None:
    run = new_run(store)
    assert store.set_flow_run_state(run.id, Pending()).status is ACCEPT
    result = store.set_flow_run_state(run.id, Pending())
    assert result.status is ABORT and result.state is None
    assert history(store, run) == ["Scheduled", "Pending"]


def test_running_before_the_scheduled_time_waits(store: Store) -> None:
    run = new_run(store, state=Scheduled(now() + timedelta(minutes=10)))
    # a run must be claimed before it runs
    assert store.set_flow_run_state(run.id, Running()).status is ABORT
    assert store.set_flow_run_state(run.id, Pending()).status is ACCEPT
    result = store.set_flow_run_state(run.id, Running())
    assert result.status is WAIT
    assert result.delay_seconds is not None and 0 < result.delay_seconds <= 600
    assert store.read_flow_run(run.id).run_count == 0


def test_force_accepts_anything(store: Store) -> None:
    run = new_run(store, state=Completed())
    assert store.set_flow_run_state(run.id, Running()).status is REJECT
    assert store.set_flow_run_state(run.id, Running(), force=True).status is ACCEPT
    stored = store.read_flow_run(run.id)
    assert stored.run_count == 1 and stored.end_time is None


def test_a_repeated_state_id_is_accepted_once(store: Store) -> None:
    run = new_run(store, state=Pending())
    running = Running()
    assert store.set_flow_run_state(run.id, running).status is ACCEPT
    before = store.read_flow_run(run.id)
    again = store.set_flow_run_state(run.id, running)
    assert again.status is ACCEPT and again.state == running
    assert store.read_flow_run(run.id) == before
    assert history(store, run) == ["Pending", "Running"]


def test_a_state_id_of_another_run_is_refused(store: Store) -> None:
    run = new_run(store)
    other = store.create_flow_run(FlowRunCreate(flow_id=run.flow_id))
    pending = Pending()
    store.set_flow_run_state(run.id, pending)
    with pytest.raises(ObjectAlreadyExists):
        store.set_flow_run_state(other.id, pending)


def test_a_rescheduled_run_counts_a_second_run(store: Store) -> None:
    run = new_run(store, state=Pending())
    first = Running()
    store.set_flow_run_state(run.id, first)
    retry_at = now() - timedelta(seconds=1)
    # SIGTERM: the executor reschedules the run; a finished run is never reopened
    assert store.set_flow_run_state(run.id, AwaitingRetry(retry_at)).status is ACCEPT
    rescheduled = store.read_flow_run(run.id)
    assert rescheduled.end_time is None and rescheduled.expected_start_time == retry_at
    assert store.set_flow_run_state(run.id, Running()).status is ABORT  # claim first
    assert store.set_flow_run_state(run.id, Pending()).status is ACCEPT
    assert store.set_flow_run_state(run.id, Running()).status is ACCEPT
    stored = store.read_flow_run(run.id)
    assert stored.run_count == 2 and stored.start_time == first.timestamp


def test_late_and_cancel_rules(store: Store) -> None:
    run = new_run(store, state=Scheduled(now() - timedelta(minutes=1)))
    assert store.set_flow_run_state(run.id, Late()).status is ACCEPT
    assert store.set_flow_run_state(run.id, Late()).status is REJECT
    assert store.set_flow_run_state(run.id, Pending()).status is ACCEPT
    assert store.set_flow_run_state(run.id, Cancelling()).status is ACCEPT
    assert store.set_flow_run_state(run.id, Running()).status is REJECT
    assert store.set_flow_run_state(run.id, Cancelled()).status is ACCEPT
    assert history(store, run) == ["Scheduled", "Late", "Pending", "Cancelling", "Cancelled"]


def test_unknown_run(store: Store) -> None:
    with pytest.raises(FlowRunNotFound):
        store.set_flow_run_state(Flow(name="x").id, Pending())
