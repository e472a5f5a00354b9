"""Indexes for the runs list at scale: each filter read in the list's order.

The runs list orders by ``created DESC, id DESC`` and filters by state type, flow,
deployment, parent run and the history/upcoming view
(:mod:`nbflow.orchestration.store.run_list`).  Measured with 100k flow runs and 1M task
runs (``benchmarks/scale.py``; docs/store.md), the single-column indexes made SQLite and
PostgreSQL sort every matching run for one page and read every run a deep page skipped.
Each index here leads with what a query seeks and carries the order (``created, id``), so
a page is read in order and stops after it; the unfiltered, flow and deployment ones also
carry the view's columns (``state_type, expected_start_time``), so a deep page skips its
offset — and a count counts — inside the index:

* ``ix_flow_runs_list``: ``(created, id, state_type, expected_start_time)``, replaces
  ``(created)``;
* ``ix_flow_runs_list_by_state``: ``(state_type, created, id)``;
* ``ix_flow_runs_list_by_flow`` / ``_by_deployment``: ``(flow_id | deployment_id, created,
  id, state_type, expected_start_time)``, replace the single-column indexes (a prefix
  serves their lookups, the foreign keys' included);
* ``ix_flow_runs_list_by_parent``: ``(parent_flow_run_id, created, id)``, replaces
  ``(parent_flow_run_id)`` (SQLite scanned the whole list for a pipeline's children);
* ``ix_flow_runs_by_updated``: ``(updated, id)``: runs changed since a time, oldest
  change first (the events websocket's catch-up).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 17:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_VIEW = ["created", "id", "state_type", "expected_start_time"]

#: (index, its columns, (the index it replaces, that one's columns) or None)
_INDEXES: list[tuple[str, list[str], tuple[str, list[str]] | None]] = [
    ("ix_flow_runs_list", _VIEW, ("ix_flow_runs_created", ["created"])),
    ("ix_flow_runs_list_by_state", ["state_type", "created", "id"], None),
    ("ix_flow_runs_list_by_flow", ["flow_id", *_VIEW], ("ix_flow_runs_flow_id", ["flow_id"])),
    (
        "ix_flow_runs_list_by_deployment",
        ["deployment_id", *_VIEW],
        ("ix_flow_runs_deployment_id", ["deployment_id"]),
    ),
    (
        "ix_flow_runs_list_by_parent",
        ["parent_flow_run_id", "created", "id"],
        ("ix_flow_runs_parent_flow_run_id", ["parent_flow_run_id"]),
    ),
    ("ix_flow_runs_by_updated", ["updated", "id"], None),
]


def upgrade() -> None:
    for name, columns, replaced in _INDEXES:
        op.create_index(name, "flow_runs", columns)
        if replaced is not None:
            op.drop_index(replaced[0], table_name="flow_runs")


def downgrade() -> None:
    for name, _columns, replaced in reversed(_INDEXES):
        if replaced is not None:
            op.create_index(replaced[0], "flow_runs", replaced[1])
        op.drop_index(name, table_name="flow_runs")
