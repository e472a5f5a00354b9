"""Deployments as versioned definitions: create and update with an author, preview an
update (dry run), read the versions and what each changed.

:class:`DeploymentVersionStore` runs each operation as one transaction of the
:class:`~nbflow.orchestration.store.store.Store` it is given, through the transactions of
:mod:`~nbflow.orchestration.store.deployments` (the same ones ``Store.create_deployment``
and ``Store.update_deployment`` use, so every path records versions).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any
from uuid import UUID

from sqlalchemy.exc import IntegrityError

from nbflow.exceptions import NotFound, ObjectAlreadyExists, ValidationError
from nbflow.orchestration.deployment_diff import CellDiff, code_cell_diff, field_changes
from nbflow.orchestration.store import deployments as deployments_tx
from nbflow.orchestration.store.store import Store
from nbflow.schemas import (
    Deployment,
    DeploymentCreate,
    DeploymentVersion,
    DeploymentVersionDetail,
    FieldChange,
)

__all__ = ["DeploymentVersionStore"]


class DeploymentVersionStore:
    """Versioned writes and version reads of deployments over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(
        self, deployment: DeploymentCreate, *, author: str, given: Collection[str] | None = None
    ) -> tuple[Deployment, list[FieldChange] | None]:
        """Create the deployment (version 1) or update the one with its flow and name (only
        the ``given`` fields, default all); return it and the fields changed (None: created)."""
        new = Deployment.model_validate(deployment.model_dump())
        try:
            return self.store.write_transaction(
                lambda conn: deployments_tx.upsert_with_changes(
                    conn, new, author=author, given=given
                )
            )
        except IntegrityError as exc:
            raise ObjectAlreadyExists(f"cannot store deployment {new.name!r}: {exc.orig}") from exc

    def update(
        self,
        deployment_id: UUID,
        changes: Mapping[str, Any],
        *,
        author: str,
        expected_version: int | None = None,
    ) -> tuple[Deployment, list[FieldChange]]:
        """Apply ``changes`` as a new version; return it and the fields it changed.

        With ``expected_version`` a deployment changed since that version is left alone:
        :class:`~nbflow.exceptions.DeploymentVersionConflict` names the current version
        and what changed.
        """
        _refuse_fixed(changes)

        try:
            return self.store.write_transaction(
                lambda conn: deployments_tx.apply_update(
                    conn, deployment_id, changes, author=author, expected_version=expected_version
                )
            )
        except IntegrityError as exc:
            raise ObjectAlreadyExists(
                f"cannot update deployment {deployment_id}: {exc.orig}"
            ) from exc

    def preview(
        self,
        deployment_id: UUID,
        changes: Mapping[str, Any],
        *,
        expected_version: int | None = None,
    ) -> tuple[Deployment, list[FieldChange]]:
        """Return the deployment and the fields ``changes`` would change; store nothing."""
        _refuse_fixed(changes)
        current, _, diff = self.store.read_transaction(
            lambda conn: deployments_tx.plan_update(
                conn, deployment_id, changes, expected_version=expected_version
            )
        )
        return current, diff

    def versions(self, deployment_id: UUID) -> list[DeploymentVersion]:
        """Return the deployment's versions, newest first."""
        return self.store.read_transaction(
            lambda conn: deployments_tx.read_versions(conn, deployment_id)
        )

    def version(self, deployment_id: UUID, version: int) -> DeploymentVersionDetail:
        """Return one version with its definition, notebook snapshot and the fields it
        changed from the version before."""
        fields, _ = self.changes(deployment_id, version, cells=False)
        detail = self._read(deployment_id, version)
        return detail.model_copy(update={"changes": fields})

    def _read(self, deployment_id: UUID, version: int) -> DeploymentVersionDetail:
        return self.store.read_transaction(
            lambda conn: deployments_tx.read_version(conn, deployment_id, version)
        )

    def changes(
        self, deployment_id: UUID, version: int, against: int | None = None, *, cells: bool = True
    ) -> tuple[list[FieldChange], list[CellDiff]]:
        """Return the fields and code cells that differ from version ``against`` (default:
        the one before) to ``version``; version 1 against nothing lists every field."""
        new = self._read(deployment_id, version)
        base = version - 1 if against is None else against
        if base < 1 and against is None:
            old_definition: dict[str, Any] = {}
            old_notebook: tuple[str | None, dict[str, Any] | None] = (None, None)
        else:
            try:
                old = self._read(deployment_id, base)
            except NotFound:
                raise ValidationError(
                    "query.against",
                    base,
                    f"is not a version of deployment {deployment_id}",
                    "list them with GET /deployments/{id}/versions",
                ) from None
            old_definition, old_notebook = old.definition, (old.notebook_sha256, old.notebook)
        fields = field_changes(
            old_definition,
            new.definition,
            old_notebook=old_notebook,
            new_notebook=(new.notebook_sha256, new.notebook),
        )
        if not cells:
            return fields, []
        diff = code_cell_diff(
            old_notebook[1], new.notebook, old_label=f"v{base}", new_label=f"v{version}"
        )
        return fields, diff


def _refuse_fixed(changes: Mapping[str, Any]) -> None:
    for key in sorted(changes.keys() & deployments_tx.FIXED_FIELDS):
        raise ValidationError(key, changes[key], "cannot be changed")
