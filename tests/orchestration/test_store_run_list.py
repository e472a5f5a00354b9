"""The runs list's page and count queries (store/run_list.py) agree with the filter's meaning.

Runs of several flows, deployments and states are listed page by page with each filter;
the pages must concatenate to exactly the matching runs in order, and the count must
match — on SQLite and PostgreSQL, through the indexes of migration 0005.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from nbflow.orchestration.store import Store
from nbflow.orchestration.store.tables import flow_runs
from nbflow.schemas import DeploymentCreate, Flow, FlowRun, FlowRunCreate, FlowRunFilter
from nbflow.states import Completed, Failed, Running, Scheduled, StateType, now

Case = tuple[str, Callable[[dict[str, Any]], dict[str, Any]], Callable[[FlowRun, dict], bool]]

CASES: list[Case] = [
    ("everything", lambda w: {}, lambda r, w: True),
    (
        "history",
        lambda w: {"view": "history"},
        lambda r, w: not (r.state_type == "SCHEDULED" and r.expected_start_time > w["at"]),
    ),
    (
        "failed",
        lambda w: {"state_types": [StateType.FAILED]},
        lambda r, w: r.state_type == "FAILED",
    ),
    ("flow name", lambda w: {"flow_names": ["b"]}, lambda r, w: r.flow_name == "b"),
    (
        "flow names and ids intersect",
        lambda w: {"flow_names": ["a", "b"], "flow_ids": [w["flows"]["b"]]},
        lambda r, w: r.flow_name == "b",
    ),
    ("unknown flow name", lambda w: {"flow_names": ["nope"]}, lambda r, w: False),
    (
        "deployment",
        lambda w: {"deployment_ids": [w["deployment"]]},
        lambda r, w: r.deployment_id == w["deployment"],
    ),
    (
        "time range",
        lambda w: {"start_after": w["at"] - timedelta(days=9), "start_before": w["at"]},
        lambda r, w: w["at"] - timedelta(days=9) <= r.expected_start_time <= w["at"],
    ),
    (
        "children",
        lambda w: {"parent_flow_run_ids": [w["parent"]]},
        lambda r, w: r.parent_flow_run_id == w["parent"],
    ),
]


@pytest.fixture
def world(store: Store) -> dict[str, Any]:
    flows = {n: store.create_flow(Flow(name=n, parameters_schema={})).id for n in "abc"}
    deployment = store.create_deployment(
        DeploymentCreate(flow_id=flows["b"], name="d", runner="subprocess")
    ).id
    at = now()
    parent: Any = None
    for i in range(24):
        name = "abc"[i % 3]
        state = [Completed(), Failed(), Running(), Scheduled(scheduled_time=at + timedelta(1))][
            i % 4
        ]
        run = store.create_flow_run(
            FlowRunCreate(
                flow_id=flows[name],
                deployment_id=deployment if name == "b" and i % 2 else None,
                parent_flow_run_id=parent if i % 5 == 0 else None,
                state=state,
            )
        )
        parent = parent or run.id
        # Distinct ages, some runs sharing one creation time (the id breaks the tie).
        created = at - timedelta(days=i // 2)
        values: dict[str, Any] = {"created": created}
        if state.type is not StateType.SCHEDULED:
            values["expected_start_time"] = created
        stmt = sa.update(flow_runs).where(flow_runs.c.id == run.id).values(values)
        store.write_transaction(lambda c, s=stmt: c.execute(s))
    return {"flows": flows, "deployment": deployment, "at": at, "parent": parent}


@pytest.mark.parametrize("label, make, keep", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("sort", ["created_desc", "expected_start_asc"])
def test_pages_concatenate_to_the_matching_runs(
    store: Store,
    world: dict[str, Any],
    label: str,
    make: Callable[[dict[str, Any]], dict[str, Any]],
    keep: Callable[[Any, dict], bool],
    sort: str,
) -> None:
    every = store.read_flow_runs(FlowRunFilter(limit=1000))
    assert len(every) == 24
    wanted = [r for r in every if keep(_Row(r), world)]
    if sort == "expected_start_asc":
        wanted.sort(key=lambda r: (r.expected_start_time, r.id))
    else:
        assert [r.created for r in every] == sorted((r.created for r in every), reverse=True)
        wanted.sort(key=lambda r: (r.created, r.id), reverse=True)
    criteria = make(world)
    paged: list[FlowRun] = []
    for offset in range(0, 30, 4):
        paged += store.read_flow_runs(
            FlowRunFilter(**criteria, sort=sort, limit=4, offset=offset)  # type: ignore[arg-type]
        )
    assert [r.id for r in paged] == [r.id for r in wanted]
    assert all(r.flow_name for r in paged)
    assert store.count_flow_runs(FlowRunFilter(**criteria)) == len(wanted)


class _Row:
    """What the expectations look at, from a read run."""

    def __init__(self, run: FlowRun) -> None:
        self.state_type = run.state.type.value if run.state else None
        self.flow_name = run.flow_name
        self.deployment_id = run.deployment_id
        self.expected_start_time = run.expected_start_time
        self.parent_flow_run_id = run.parent_flow_run_id
