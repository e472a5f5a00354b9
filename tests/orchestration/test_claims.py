"""Claiming due runs inside one transaction, within every concurrency limit.

The race tests run claimers in ``spawn``-ed processes, each with its own store
connection, against one database: with a limit of 1 never two runs hold a slot.
"""

from __future__ import annotations

import multiprocessing
import traceback
from datetime import timedelta
from multiprocessing.synchronize import Barrier
from typing import Any
from uuid import UUID

import pytest

from nbflow.exceptions import NotFound, ValidationError
from nbflow.orchestration.store import Store
from nbflow.schemas import DeploymentCreate, Flow, FlowRunCreate, FlowRunFilter
from nbflow.states import Completed, Running, Scheduled, StateType, now

_ctx = multiprocessing.get_context("spawn")


def _runs(store: Store, count: int, **fields: Any) -> list[UUID]:
    flow_name = fields.pop("flow_name", "f")
    flow = store.create_flow(Flow(name=flow_name))
    fields.setdefault("mode", "batch")
    fields.setdefault("runner", "subprocess")
    return [
        store.create_flow_run(FlowRunCreate(flow_id=flow.id, state=Scheduled(), **fields)).id
        for _ in range(count)
    ]


def _claim(store: Store, **kwargs: Any) -> list[UUID]:
    kwargs.setdefault("claimer", "test")
    kwargs.setdefault("default_runner", "subprocess")
    return [c.flow_run.id for c in store.claim_flow_runs(["subprocess"], **kwargs)]


def test_claims_due_batch_runs_of_its_runners_oldest_first(store: Store) -> None:
    flow = store.create_flow(Flow(name="f"))
    dep = store.create_deployment(
        DeploymentCreate(flow_id=flow.id, name="d", runner="subprocess", job_variables={"a": 1})
    )
    due = _runs(store, 2)
    later = store.create_flow_run(
        FlowRunCreate(
            flow_id=flow.id,
            mode="batch",
            state=Scheduled(scheduled_time=now() + timedelta(hours=1)),
        )
    )
    docker = _runs(store, 1, runner="docker")
    interactive = _runs(store, 1, mode="interactive")
    # No runner of its own: its deployment's.
    of_dep = store.create_flow_run(
        FlowRunCreate(flow_id=flow.id, deployment_id=dep.id, mode="batch", state=Scheduled())
    )
    claims = store.claim_flow_runs(["subprocess"], claimer="me", default_runner="docker")
    assert [c.flow_run.id for c in claims] == [*due, of_dep.id]
    for claim in claims:
        assert claim.flow_run.state is not None and claim.flow_run.state.name == "Pending"
        assert claim.flow_run.state.message == "claimed by me"
    assert claims[-1].deployment_job_variables == {"a": 1}
    assert claims[-1].flow_run.runner == "subprocess"  # the resolved runner is recorded
    assert claims[0].deployment_job_variables is None
    for left in (later.id, *docker, *interactive):
        assert store.read_flow_run(left).state_type is StateType.SCHEDULED
    assert _claim(store) == []  # claimed once


def test_default_runner_applies_to_runs_without_one(store: Store) -> None:
    ids = _runs(store, 1, runner=None)
    assert _claim(store, default_runner="docker") == []
    assert _claim(store) == ids
    assert store.read_flow_run(ids[0]).runner == "subprocess"


def test_global_deployment_flow_and_tag_limits(store: Store) -> None:
    assert _claim(store, global_limit=2) == []
    _runs(store, 3)
    assert len(_claim(store, global_limit=2)) == 2
    assert _claim(store, global_limit=2) == []

    flow = store.create_flow(Flow(name="g"))
    dep = store.create_deployment(
        DeploymentCreate(flow_id=flow.id, name="d", runner="subprocess", concurrency_limit=1)
    )
    for _ in range(2):
        store.create_flow_run(
            FlowRunCreate(flow_id=flow.id, deployment_id=dep.id, mode="batch", state=Scheduled())
        )
    # The leftover run of "f" and one of the deployment's; never its second.
    assert len(_claim(store)) == 2
    assert _claim(store) == []

    tagged = _runs(store, 3, flow_name="h", tags=["gpu"])
    store.set_concurrency_limit("tag:gpu", 1)
    assert _claim(store) == tagged[:1]
    assert _claim(store) == []
    logs, _ = store.read_logs(tagged[2])  # logged once, though two claims held it back
    assert [(x.logger, x.message) for x in logs] == [
        ("nbflow.dispatcher", "waiting for a concurrency slot (1/1 runs tagged gpu running)")
    ]
    store.set_flow_run_state(tagged[0], Running())
    store.set_flow_run_state(tagged[0], Completed())
    assert _claim(store) == tagged[1:2]  # a finished run frees its slot

    limited = _runs(store, 2, flow_name="k")
    store.set_concurrency_limit("flow:k", 0)  # 0 holds every run back
    assert _claim(store) == []
    store.delete_concurrency_limit("flow:k")
    assert _claim(store) == limited
    assert _claim(store, limit=1) == []


def test_limit_caps_the_runs_claimed_in_one_call(store: Store) -> None:
    ids = _runs(store, 5)
    assert _claim(store, limit=2) == ids[:2]
    assert _claim(store, limit=10) == ids[2:]


def test_concurrency_limit_rows(store: Store) -> None:
    store.set_concurrency_limit("tag:gpu", 2)
    store.set_concurrency_limit("flow:nightly", 1)
    store.set_concurrency_limit("tag:gpu", 3)
    assert [(x.key, x.limit) for x in store.read_concurrency_limits()] == [
        ("flow:nightly", 1),
        ("tag:gpu", 3),
    ]
    with pytest.raises(ValidationError, match=r"key='gpu'.*flow:<flow name> or tag:<tag>"):
        store.set_concurrency_limit("gpu", 1)
    with pytest.raises(ValidationError, match="limit=-1"):
        store.set_concurrency_limit("tag:gpu", -1)
    store.delete_concurrency_limit("tag:gpu")
    with pytest.raises(NotFound):
        store.delete_concurrency_limit("tag:gpu")


def _claimer(url: str, rounds: int, barrier: Barrier, results: Any) -> None:
    """Claim (limit 1), run and complete runs; record the most runs ever in a slot."""
    try:
        store = Store.from_url(url)
        barrier.wait(timeout=120)
        most = 0
        claimed = 0
        for _ in range(rounds):
            for claim in store.claim_flow_runs(
                ["subprocess"], claimer="racer", default_runner="subprocess", global_limit=1
            ):
                claimed += 1
                active = store.count_flow_runs(
                    FlowRunFilter(
                        state_types=[StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
                    )
                )
                most = max(most, active)
                store.set_flow_run_state(claim.flow_run.id, Running())
                store.set_flow_run_state(claim.flow_run.id, Completed())
        store.close()
        results.put(("ok", most, claimed))
    except BaseException:
        results.put(("error", traceback.format_exc(), 0))


@pytest.mark.parametrize("claimers", [2])
def test_claimers_in_two_processes_never_exceed_a_limit_of_one(
    store: Store, store_url: str, claimers: int
) -> None:
    ids = _runs(store, 12)
    barrier = _ctx.Barrier(claimers)
    results = _ctx.Queue()
    procs = [
        _ctx.Process(target=_claimer, args=(store_url, 40, barrier, results))
        for _ in range(claimers)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    errors = [o[1] for o in outcomes if o[0] == "error"]
    assert not errors, errors[0]
    assert max(o[1] for o in outcomes) == 1  # never two runs holding the one slot
    assert sum(o[2] for o in outcomes) == len(ids)
    for run_id in ids:
        names = [s.name for s in store.read_flow_run_states(run_id)]
        assert names.count("Pending") == 1, names
