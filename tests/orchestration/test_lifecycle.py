"""The flow-run lifecycle on SQLite and PostgreSQL: create, cancel, retry, close out."""

from __future__ import annotations

from typing import Any

import pytest

from nbflow.client.embedded import EmbeddedClient
from nbflow.exceptions import ParameterError, TransitionRejected, ValidationError
from nbflow.orchestration.lifecycle import FlowRunLifecycle
from nbflow.orchestration.store import Store
from nbflow.schemas import (
    DeploymentCreate,
    Flow,
    FlowRun,
    FlowRunCreate,
    FlowRunFilter,
    SetStateStatus,
    TaskRun,
    TaskRunFilter,
)
from nbflow.states import (
    AwaitingRetry,
    Cancelled,
    Cancelling,
    Completed,
    Crashed,
    Failed,
    Late,
    Pending,
    Running,
    Scheduled,
    State,
    StateType,
    Submitting,
)

ACCEPT = SetStateStatus.ACCEPT

#: A notebook flow with two parameters, as the ``%%flow`` cell derives it.
SCHEMA = {
    "title": "Parameters",
    "type": "object",
    "properties": {
        "region": {"type": "string", "default": "EU"},
        "n": {"type": "integer", "default": 3},
    },
    "additionalProperties": False,
}
#: A notebook without a parameters cell.
NO_PARAMETERS = {
    "title": "Parameters",
    "type": "object",
    "properties": {},
    "additionalProperties": False,
}


@pytest.fixture
def lifecycle(store: Store) -> FlowRunLifecycle:
    return FlowRunLifecycle(store, default_runner="docker")


def notebook_flow(lc: FlowRunLifecycle, schema: dict[str, Any] | None = None) -> Flow:
    return lc.store.create_flow(Flow(name="sales", parameters_schema=schema or SCHEMA))


def batch_run(lc: FlowRunLifecycle, state: State | None = None, **fields: Any) -> FlowRun:
    flow = notebook_flow(lc)
    return lc.create_flow_run(FlowRunCreate(flow_id=flow.id, mode="batch", state=state, **fields))


# -- creating ------------------------------------------------------------------------------
def test_parameters_merge_deployment_then_run_and_keep_the_runs_own_job_variables(
    lifecycle: FlowRunLifecycle,
) -> None:
    flow = notebook_flow(lifecycle)
    dep = lifecycle.store.create_deployment(
        DeploymentCreate(
            flow_id=flow.id,
            name="d",
            runner="kubernetes",
            parameters={"region": "US", "n": 5},
            job_variables={"image": "dep:1", "env": {"A": "1"}},
            notebook_path="sales.ipynb",
        )
    )
    run = lifecycle.run_deployment(dep, parameters={"n": 7}, job_variables={"env": {"B": "2"}})
    assert run.parameters == {"region": "US", "n": 7}
    assert run.runner == "kubernetes" and run.notebook_path == "sales.ipynb"
    # the deployment's (and the runner's) job variables are merged when the run is claimed
    assert run.job_variables == {"env": {"B": "2"}}
    assert run.state is not None and run.state.is_named(StateType.SCHEDULED, "Scheduled")


def test_a_batch_run_without_runner_gets_the_default_runner(lifecycle: FlowRunLifecycle) -> None:
    assert batch_run(lifecycle).runner == "docker"
    flow = notebook_flow(lifecycle)
    interactive = lifecycle.create_flow_run(
        FlowRunCreate(flow_id=flow.id, mode="interactive", state=Running())
    )
    assert interactive.runner is None


def test_parameters_of_a_notebook_without_parameters_are_refused_at_creation(
    lifecycle: FlowRunLifecycle,
) -> None:
    # Reproduction: run-now with {"x": 1} was accepted (201) and then failed "not started".
    flow = notebook_flow(lifecycle, NO_PARAMETERS)
    with pytest.raises(ParameterError) as err:
        lifecycle.create_flow_run(FlowRunCreate(flow_id=flow.id, parameters={"x": 1}, mode="batch"))
    assert err.value.field == "parameters.x"
    assert lifecycle.store.count_flow_runs() == 0


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"n": "three"}, "parameters.n"),
        ({"regoin": "EU"}, "parameters.regoin"),
        ({"x=1;import os#": 1}, "parameters.x=1;import os#"),
    ],
)
def test_a_bad_parameter_is_refused_naming_it(
    lifecycle: FlowRunLifecycle, parameters: dict[str, Any], field: str
) -> None:
    flow = notebook_flow(lifecycle)
    with pytest.raises(ParameterError) as err:
        lifecycle.create_flow_run(
            FlowRunCreate(flow_id=flow.id, parameters=parameters, mode="batch")
        )
    assert err.value.field == field
    assert lifecycle.store.count_flow_runs() == 0


def test_a_deployments_stale_parameter_is_refused_for_its_runs(lifecycle: FlowRunLifecycle) -> None:
    flow = notebook_flow(lifecycle)
    dep = lifecycle.store.create_deployment(
        DeploymentCreate(flow_id=flow.id, name="d", parameters={"n": "not a number"})
    )
    with pytest.raises(ParameterError, match=r"parameters\.n"):
        lifecycle.run_deployment(dep)


def test_a_deployment_of_another_flow_is_refused(lifecycle: FlowRunLifecycle) -> None:
    flow = notebook_flow(lifecycle)
    other = lifecycle.store.create_flow(Flow(name="other"))
    dep = lifecycle.store.create_deployment(DeploymentCreate(flow_id=other.id, name="d"))
    with pytest.raises(ValidationError) as err:
        lifecycle.create_flow_run(FlowRunCreate(flow_id=flow.id, deployment_id=dep.id))
    assert err.value.field == "deployment_id"


def test_scheduled_runs_are_created_once_per_idempotency_key(lifecycle: FlowRunLifecycle) -> None:
    flow = notebook_flow(lifecycle)
    dep = lifecycle.store.create_deployment(DeploymentCreate(flow_id=flow.id, name="d"))
    key = "scheduled:2030-01-01T06:00:00+00:00"
    first = lifecycle.run_deployment(dep, idempotency_key=key, tags=["auto-scheduled"])
    again = lifecycle.run_deployment(dep, idempotency_key=key, tags=["auto-scheduled"])
    assert again.id == first.id and lifecycle.store.count_flow_runs() == 1


def test_changed_parameters_are_validated(lifecycle: FlowRunLifecycle) -> None:
    run = batch_run(lifecycle)
    with pytest.raises(ParameterError, match=r"parameters\.n"):
        lifecycle.update_flow_run(run.id, parameters={"n": [1]})
    assert lifecycle.update_flow_run(run.id, parameters={"n": 2}).parameters == {"n": 2}


# -- cancelling ----------------------------------------------------------------------------
NOT_STARTED = [Scheduled(), Late(), AwaitingRetry(), Pending()]
STARTED: list[tuple[State, str | None]] = [
    (Pending(), "host:42"),
    (Submitting(), "host:42"),
    (Running(), None),
]


@pytest.mark.parametrize("state", NOT_STARTED, ids=lambda s: s.name)
def test_cancel_of_a_run_that_has_not_started_is_immediate(
    lifecycle: FlowRunLifecycle, state: State
) -> None:
    run = batch_run(lifecycle, state)
    result = lifecycle.cancel_flow_run(run.id, message="not needed")
    assert result.status is ACCEPT and result.state is not None
    stored = lifecycle.store.read_flow_run(run.id)
    assert stored.state is not None and stored.state.type is StateType.CANCELLED
    assert stored.state.message == "not needed"


@pytest.mark.parametrize(("state", "infrastructure"), STARTED, ids=lambda s: getattr(s, "name", s))
def test_cancel_of_a_started_run_asks_its_owner_to_stop_it(
    lifecycle: FlowRunLifecycle, state: State, infrastructure: str | None
) -> None:
    run = batch_run(lifecycle, Pending())
    if infrastructure:
        lifecycle.update_flow_run(run.id, infrastructure_id=infrastructure)
    if state.name != "Pending":
        assert lifecycle.set_flow_run_state(run.id, state).status is ACCEPT
    lifecycle.cancel_flow_run(run.id)
    assert lifecycle.store.read_flow_run(run.id).state_type is StateType.CANCELLING
    # cancelling again changes nothing
    again = lifecycle.cancel_flow_run(run.id)
    assert again.status is ACCEPT and again.state is not None
    assert again.state.type is StateType.CANCELLING
    assert [s.name for s in lifecycle.store.read_flow_run_states(run.id)].count("Cancelling") == 1


@pytest.mark.parametrize(
    "final", [Completed(), Failed(), Crashed(), Cancelled()], ids=lambda s: s.name
)
def test_cancel_of_a_finished_run_is_refused(lifecycle: FlowRunLifecycle, final: State) -> None:
    run = batch_run(lifecycle, final)
    with pytest.raises(TransitionRejected, match="already finished"):
        lifecycle.cancel_flow_run(run.id)
    assert lifecycle.store.read_flow_run(run.id).state == final


def test_embedded_cancel_of_a_scheduled_run_is_cancelled_not_cancelling_forever(
    store: Store,
) -> None:
    # Reproduction: `%nbflow cancel` in the embedded store left a Scheduled run Cancelling.
    client = EmbeddedClient(store)
    flow = client.create_flow(Flow(name="f", parameters_schema=SCHEMA))
    run = client.create_flow_run(FlowRunCreate(flow_id=flow.id, mode="batch"))
    assert client.cancel_flow_run(run.id).status is ACCEPT
    assert client.read_flow_run(run.id).state_type is StateType.CANCELLED


# -- terminal is final, claimed first --------------------------------------------------------
def test_a_cancelled_run_never_comes_back(lifecycle: FlowRunLifecycle) -> None:
    # Reproduction: Cancelled, then AwaitingRetry from the dying pod, a new claim, a new Job.
    run = batch_run(lifecycle, Running())
    lifecycle.cancel_flow_run(run.id)
    assert lifecycle.set_flow_run_state(run.id, Cancelled()).status is ACCEPT
    late = lifecycle.set_flow_run_state(run.id, AwaitingRetry(message="SIGTERM"))
    assert late.status is SetStateStatus.REJECT
    assert lifecycle.set_flow_run_state(run.id, Pending()).status is not ACCEPT
    assert lifecycle.store.read_flow_run(run.id).state_type is StateType.CANCELLED


def test_a_rescheduled_run_is_not_run_again_without_a_claim(lifecycle: FlowRunLifecycle) -> None:
    # Reproduction: a deleted pod proposed AwaitingRetry; its replacement pod ran it again.
    run = batch_run(lifecycle, Running())
    assert lifecycle.set_flow_run_state(run.id, AwaitingRetry()).status is ACCEPT
    replacement = lifecycle.set_flow_run_state(run.id, Running())
    assert replacement.status is SetStateStatus.ABORT
    assert "claimed" in (replacement.reason or "")
    assert lifecycle.set_flow_run_state(run.id, Pending()).status is ACCEPT
    assert lifecycle.set_flow_run_state(run.id, Running()).status is ACCEPT
    assert lifecycle.store.read_flow_run(run.id).run_count == 2


# -- retrying ------------------------------------------------------------------------------
def test_retry_is_a_new_linked_run_with_the_same_configuration(lifecycle: FlowRunLifecycle) -> None:
    flow = notebook_flow(lifecycle)
    dep = lifecycle.store.create_deployment(
        DeploymentCreate(flow_id=flow.id, name="d", runner="kubernetes", notebook_path="s.ipynb")
    )
    old = lifecycle.run_deployment(
        dep, parameters={"region": "US"}, job_variables={"cpu": "2"}, tags=["auto-scheduled"]
    )
    for state in (Pending(), Running(), Failed(message="boom")):
        lifecycle.set_flow_run_state(old.id, state)
    new = lifecycle.retry_flow_run(old.id, parameters={"n": 9})
    assert new.id != old.id and new.retry_of == old.id
    assert new.parameters == {"region": "US", "n": 9}
    assert (new.flow_id, new.deployment_id, new.runner) == (flow.id, dep.id, "kubernetes")
    assert new.job_variables == {"cpu": "2"} and new.notebook_path == "s.ipynb"
    assert "auto-scheduled" not in new.tags and new.mode == "batch"
    assert new.state is not None and new.state.type is StateType.SCHEDULED
    # the old run stays as it ended
    assert lifecycle.store.read_flow_run(old.id).state_type is StateType.FAILED
    found = lifecycle.store.read_flow_runs(FlowRunFilter(deployment_ids=[dep.id]))
    assert {r.id for r in found} == {old.id, new.id}


def test_retry_of_an_unfinished_run_is_refused(lifecycle: FlowRunLifecycle) -> None:
    run = batch_run(lifecycle, Running())
    with pytest.raises(TransitionRejected, match="only a finished run"):
        lifecycle.retry_flow_run(run.id)


def test_retry_with_a_bad_parameter_is_refused_naming_it(lifecycle: FlowRunLifecycle) -> None:
    run = batch_run(lifecycle, Crashed())
    with pytest.raises(ParameterError) as err:
        lifecycle.retry_flow_run(run.id, parameters={"n": "x"}, field="body.parameters")
    assert err.value.field == "body.parameters.n"
    assert lifecycle.store.count_flow_runs() == 1


def test_retry_of_an_interactive_run_is_refused(lifecycle: FlowRunLifecycle) -> None:
    flow = notebook_flow(lifecycle)
    run = lifecycle.create_flow_run(
        FlowRunCreate(flow_id=flow.id, mode="interactive", state=Running())
    )
    lifecycle.set_flow_run_state(run.id, Failed())
    with pytest.raises(ValidationError) as err:
        lifecycle.retry_flow_run(run.id)
    assert err.value.field == "mode"


# -- closing out ---------------------------------------------------------------------------
def _task(run: FlowRun, name: str, state: State) -> TaskRun:
    return TaskRun(flow_run_id=run.id, name=name, task_key=name, state=state)


def _tasks_of(lc: FlowRunLifecycle, run: FlowRun) -> dict[str, TaskRun]:
    found = lc.store.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))
    return {t.name: t for t in found}


@pytest.mark.parametrize(
    ("final", "running_becomes", "pending_becomes"),
    [
        (Cancelled(), StateType.CANCELLED, StateType.CANCELLED),
        (Crashed(), StateType.CRASHED, StateType.CRASHED),
        (Failed(), StateType.CRASHED, StateType.CANCELLED),
        (Completed(), StateType.CRASHED, StateType.CANCELLED),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_a_finished_run_closes_out_its_open_task_runs(
    lifecycle: FlowRunLifecycle,
    final: State,
    running_becomes: StateType,
    pending_becomes: StateType,
) -> None:
    run = batch_run(lifecycle, Pending())
    lifecycle.set_flow_run_state(run.id, Running())
    tasks = [
        _task(run, "running", Running()),
        _task(run, "pending", Pending()),
        _task(run, "done", Completed()),
        _task(run, "failed", Failed()),
    ]
    lifecycle.store.write_task_runs(tasks, [(t.id, t.state) for t in tasks if t.state])
    assert lifecycle.set_flow_run_state(run.id, final).status is ACCEPT
    after = _tasks_of(lifecycle, run)
    assert after["running"].state is not None and after["running"].state.type is running_becomes
    assert after["pending"].state is not None and after["pending"].state.type is pending_becomes
    assert after["done"].state == tasks[2].state and after["failed"].state == tasks[3].state
    assert after["running"].end_time is not None
    assert "closed out" in (after["running"].state.message or "")
    # the closing state is appended to each open task run's history
    history = lifecycle.store.read_task_run_states(tasks[0].id)
    assert [s.type for s in history] == [StateType.RUNNING, running_becomes]
    assert len(lifecycle.store.read_task_run_states(tasks[2].id)) == 1


def test_cancel_through_cancelling_closes_out_once(lifecycle: FlowRunLifecycle) -> None:
    run = batch_run(lifecycle, Pending())
    lifecycle.set_flow_run_state(run.id, Running())
    task = _task(run, "t", Running())
    lifecycle.store.write_task_runs([task], [(task.id, Running())])
    lifecycle.cancel_flow_run(run.id)
    # Cancelling is not terminal: the task is still running until the run ends
    assert _tasks_of(lifecycle, run)["t"].state.type is StateType.RUNNING  # type: ignore[union-attr]
    lifecycle.set_flow_run_state(run.id, Cancelled(message="stopped"))
    assert _tasks_of(lifecycle, run)["t"].state.type is StateType.CANCELLED  # type: ignore[union-attr]
    assert len(lifecycle.store.read_task_run_states(task.id)) == 2


def test_a_rejected_terminal_state_closes_out_nothing(lifecycle: FlowRunLifecycle) -> None:
    run = batch_run(lifecycle, Pending())
    lifecycle.set_flow_run_state(run.id, Running())
    lifecycle.set_flow_run_state(run.id, Completed())
    late = _task(run, "late", Running())  # a straggler batch after the run ended
    lifecycle.store.write_task_runs([late], [(late.id, Running())])
    assert lifecycle.set_flow_run_state(run.id, Crashed()).status is SetStateStatus.REJECT
    assert _tasks_of(lifecycle, run)["late"].state.type is StateType.RUNNING  # type: ignore[union-attr]


def test_cancelling_is_not_a_state_cancel_can_leave(lifecycle: FlowRunLifecycle) -> None:
    run = batch_run(lifecycle, Running())
    lifecycle.cancel_flow_run(run.id)
    assert lifecycle.set_flow_run_state(run.id, Cancelling()).status is SetStateStatus.REJECT
