"""Deployment versions in the store (SQLite and PostgreSQL): every create and change is a
version with its author, a stale edit changes nothing, a dry run stores nothing, and the
code cells of two snapshots diff cell by cell."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command

from nbflow.exceptions import DeploymentVersionConflict, ValidationError
from nbflow.orchestration.deployment_diff import code_cell_diff
from nbflow.orchestration.store import Store
from nbflow.orchestration.store.database import alembic_config
from nbflow.orchestration.store.deployment_versions import DeploymentVersionStore
from nbflow.schemas import Deployment, DeploymentCreate, Flow, Schedule


def _nb(*sources: str) -> dict[str, Any]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "id": f"c{i}",
                "metadata": {},
                "source": src,
                "outputs": [],
                "execution_count": None,
            }
            for i, src in enumerate(sources)
        ],
    }


def _deploy(store: Store, **fields: Any) -> tuple[DeploymentVersionStore, Deployment]:
    versions = DeploymentVersionStore(store)
    flow = store.create_flow(Flow(name="report"))
    created, changes = versions.create(
        DeploymentCreate(
            flow_id=flow.id,
            name="daily",
            notebook=_nb("x = 1", "print(x)"),
            notebook_path="report.ipynb",
            schedules=[Schedule(cron="*/30 * * * *")],
            parameters={"region": "US"},
            **fields,
        ),
        author="alice",
    )
    assert changes is None
    return versions, created


def test_every_create_and_change_is_a_version_with_its_author(store: Store) -> None:
    versions, created = _deploy(store)
    assert created.version == 1
    updated, changes = versions.update(
        created.id, {"parameters": {"region": "EU"}}, author="bob", expected_version=1
    )
    assert updated.version == 2 and updated.parameters == {"region": "EU"}
    assert [(c.field, c.old, c.new) for c in changes] == [
        ("parameters", {"region": "US"}, {"region": "EU"})
    ]
    # Paused through the plain Store API (the CLI without a server): a version too.
    paused = store.update_deployment(created.id, paused=True)
    assert paused.version == 3
    listed = versions.versions(created.id)
    assert [(v.version, v.author, v.summary) for v in listed] == [
        (3, "cli", "paused"),
        (2, "bob", "changed parameters"),
        (1, "alice", "created"),
    ]
    second = versions.version(created.id, 2)
    assert second.definition["parameters"] == {"region": "EU"}
    assert second.definition["schedules"][0]["cron"] == "*/30 * * * *"
    assert second.notebook == created.notebook  # the snapshot is stored once, read back
    assert [c.field for c in second.changes] == ["parameters"]


def test_an_update_that_changes_nothing_is_no_version(store: Store) -> None:
    versions, created = _deploy(store)
    # The same schedule with a new id: the same schedule.
    same, changes = versions.update(
        created.id,
        {"schedules": [Schedule(cron="*/30 * * * *")], "parameters": {"region": "US"}},
        author="bob",
    )
    assert changes == [] and same.version == 1
    assert same.schedules[0].id == created.schedules[0].id
    assert [v.version for v in versions.versions(created.id)] == [1]


def test_a_stale_edit_is_refused_and_changes_nothing(store: Store) -> None:
    versions, created = _deploy(store)
    versions.update(
        created.id, {"schedules": [Schedule(cron="0 6 * * *")]}, author="bob", expected_version=1
    )
    with pytest.raises(DeploymentVersionConflict) as caught:
        versions.update(
            created.id, {"parameters": {"region": "EU"}}, author="carol", expected_version=1
        )
    assert caught.value.current == 2 and caught.value.changed == ["schedules"]
    assert "version 2" in str(caught.value) and "schedules" in str(caught.value)
    now = store.read_deployment(created.id)
    assert now.version == 2 and now.parameters == {"region": "US"}
    assert [v.version for v in versions.versions(created.id)] == [2, 1]


def test_a_dry_run_lists_the_changes_and_stores_nothing(store: Store) -> None:
    versions, created = _deploy(store)
    current, changes = versions.preview(
        created.id,
        {"description": "daily sales", "notebook": _nb("x = 2", "print(x)"), "paused": False},
        expected_version=1,
    )
    assert current.version == 1
    assert [c.field for c in changes] == ["description", "notebook"]
    assert changes[0].old is None and changes[0].new == "daily sales"
    assert changes[1].new["code_cells"] == 2
    assert store.read_deployment(created.id).description is None
    assert [v.version for v in versions.versions(created.id)] == [1]


def test_a_new_snapshot_is_a_version_and_its_code_cells_diff(store: Store) -> None:
    versions, created = _deploy(store)
    # Redeploying (upsert by flow and name) with another notebook: a new version.
    redeployed, changes = versions.create(
        DeploymentCreate(
            flow_id=created.flow_id,
            name="daily",
            notebook=_nb("x = 2", "print(x)", "print('done')"),
            notebook_path="report.ipynb",
            schedules=[Schedule(cron="*/30 * * * *")],
            parameters={"region": "US"},
        ),
        author="bob",
    )
    assert redeployed.version == 2 and [c.field for c in changes or []] == ["notebook"]
    fields, cells = versions.changes(created.id, 2)
    assert [f.field for f in fields] == ["notebook"]
    assert [(c.status, c.old_index, c.new_index) for c in cells] == [
        ("changed", 0, 0),
        ("added", None, 2),
    ]
    assert "-x = 1\n+x = 2\n" in cells[0].diff
    assert "+print('done')" in cells[1].diff
    # Against an explicit version, the other way round: the added cell is removed.
    _, back = versions.changes(created.id, 1, against=2)
    assert [c.status for c in back] == ["changed", "removed"]
    with pytest.raises(ValidationError) as caught:
        versions.changes(created.id, 2, against=9)
    assert caught.value.field == "query.against"


def test_file_mode_needs_a_notebook_path(store: Store) -> None:
    versions, created = _deploy(store)
    with pytest.raises(ValidationError) as caught:
        versions.update(created.id, {"run_mode": "file", "notebook_path": None}, author="bob")
    assert caught.value.field == "run_mode"
    updated, _ = versions.update(
        created.id, {"run_mode": "file", "kernel_name": "python3"}, author="bob"
    )
    assert (updated.run_mode, updated.kernel_name, updated.version) == ("file", "python3", 2)


def test_code_cell_diff_aligns_inserted_cells() -> None:
    old = _nb("a = 1", "b = 2", "c = 3")
    new = _nb("a = 1", "inserted = 0", "b = 2", "c = 30")
    cells = code_cell_diff(old, new)
    assert [(c.status, c.old_index, c.new_index) for c in cells] == [
        ("added", None, 1),
        ("changed", 2, 3),
    ]
    assert code_cell_diff(old, old) == []


def test_migration_records_existing_deployments_as_version_1(store_url: str) -> None:
    store = Store.from_url(store_url)
    try:
        _, created = _deploy(store)
        store.update_deployment(created.id, description="before the upgrade")
        with store.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0003")
        with store.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        versions = DeploymentVersionStore(store)
        listed = versions.versions(created.id)
        assert [(v.version, v.author) for v in listed] == [(1, "migration")]
        one = versions.version(created.id, 1)
        assert one.definition["description"] == "before the upgrade"
        assert one.definition["schedules"][0]["cron"] == "*/30 * * * *"
        assert one.notebook == created.notebook
        # The next edit is version 2, diffing cleanly against the migrated definition.
        updated, changes = versions.update(
            created.id, {"paused": True}, author="bob", expected_version=1
        )
        assert updated.version == 2 and [c.field for c in changes] == ["paused"]
        assert [c.field for c in versions.version(created.id, 2).changes] == ["paused"]
    finally:
        store.close()
