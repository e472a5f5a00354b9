"""The store: every operation of the client interface as SQL transactions.

Each public method is one transaction.  Writes go through :meth:`Store._write`, which
begins with the SQLite write lock (``BEGIN IMMEDIATE``) or, on PostgreSQL, locks the rows
it changes, and retries on lock conflicts.  Flow-run state changes run the orchestration
policy inside the transaction that holds the run's row lock, so two processes proposing
states for one run are decided one after the other against the committed current state.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import pydantic
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import IntegrityError

from nbflow.exceptions import FlowRunNotFound, NotFound, ObjectAlreadyExists, ValidationError
from nbflow.orchestration.store import batch, claims, due, rows, run_list
from nbflow.orchestration.store import deployments as deployments_tx
from nbflow.orchestration.store import flow_runs as flow_runs_tx
from nbflow.orchestration.store.bulk import bulk_execute_rows
from nbflow.orchestration.store.database import (
    create_engine,
    migrate,
    run_with_retry,
    write_engine,
)
from nbflow.orchestration.store.log_order import lock_log_streams
from nbflow.orchestration.store.tables import (
    artifacts,
    deployments,
    flow_run_states,
    flow_runs,
    flows,
    logs,
    task_run_states,
    task_runs,
)
from nbflow.schemas import (
    Artifact,
    ConcurrencyLimit,
    Deployment,
    DeploymentCreate,
    Flow,
    FlowRun,
    FlowRunCreate,
    FlowRunFilter,
    Log,
    OrchestrationResult,
    TaskRun,
    TaskRunFilter,
)
from nbflow.states import State, now

__all__ = ["UPDATABLE_FLOW_RUN_FIELDS", "Store"]

T = TypeVar("T")

logger = logging.getLogger("nbflow.store")

#: Fields ``update_flow_run`` may change; states change only through the gate.
UPDATABLE_FLOW_RUN_FIELDS = frozenset(
    {
        "name",
        "tags",
        "job_variables",
        "parameters",
        "infrastructure_id",
        "output_path",
        "notebook_path",
        "runner",
    }
)
_LOG_INSERT = sa.insert(logs)


class Store:
    """Flows, deployments, runs, task runs, logs and artifacts in a SQL database."""

    def __init__(self, engine: Engine, *, run_migrations: bool = True) -> None:
        self.engine = engine
        self._writer = write_engine(engine)
        self.dialect = engine.dialect.name
        self._due_listeners: list[due.DueListener] = []
        in_memory = self.dialect == "sqlite" and engine.url.database in (None, "", ":memory:")
        # An in-memory SQLite database is one shared connection: serialize its users.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if in_memory else contextlib.nullcontext()
        )
        # Built once: bulk_execute_rows caches its compiled plans by statement.
        upsert = self._insert(task_runs)
        self._task_run_upsert = upsert.on_conflict_do_update(
            index_elements=[task_runs.c.id],
            set_={
                c.name: upsert.excluded[c.name]
                for c in task_runs.c
                if c.name not in ("id", "created")
            },
            where=upsert.excluded.updated >= task_runs.c.updated,
        )
        self._task_run_state_append = self._insert(task_run_states).on_conflict_do_nothing(
            index_elements=[task_run_states.c.state_id]
        )
        if run_migrations:
            migrate(engine)

    @classmethod
    def from_url(cls, url: str | URL, **engine_kwargs: Any) -> Store:
        """Open (and migrate, on first use) the store at a SQLAlchemy URL."""
        return cls(create_engine(url, **engine_kwargs))

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # -- transactions --------------------------------------------------------------------
    def _read(self, fn: Callable[[sa.Connection], T]) -> T:
        with self._lock, self.engine.connect() as conn, conn.begin():
            return fn(conn)

    def _write(self, fn: Callable[[sa.Connection], T]) -> T:
        def attempt() -> T:
            with self._lock, self._writer.begin() as conn:
                due.take_noted(conn)  # what a failed earlier attempt left on the connection
                result = fn(conn)
                noted = due.take_noted(conn)
            # Committed: runs this transaction made due can be claimed now.
            if noted:
                self._tell_due(min(noted))
            return result

        return run_with_retry(attempt)

    def add_due_listener(self, listener: due.DueListener) -> Callable[[], None]:
        """Call ``listener(expected start)`` after each commit that made a batch run due
        (or scheduled one), in the committing thread; return the function that removes it.

        Only this process's writes are seen; other processes' reach a PostgreSQL
        ``LISTEN`` on the channel of :mod:`~nbflow.orchestration.store.due`.
        """
        self._due_listeners.append(listener)

        def remove() -> None:
            if listener in self._due_listeners:
                self._due_listeners.remove(listener)

        return remove

    def _tell_due(self, at: datetime) -> None:
        for listener in list(self._due_listeners):
            try:
                listener(at)
            except Exception:
                logger.exception("due-run listener %r failed", listener)

    def read_transaction(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn(conn)`` as one read transaction (for stores of other tables, e.g.
        :mod:`~nbflow.orchestration.store.automations`)."""
        return self._read(fn)

    def write_transaction(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn(conn)`` as one write transaction, retried on lock conflicts."""
        return self._write(fn)

    def _insert(self, table: sa.Table) -> Any:
        """Return a dialect INSERT (it has ``on_conflict_do_update`` / ``_do_nothing``)."""
        # Imported here: the PostgreSQL dialect package costs ~10% of the CLI's start-up.
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    # -- flows ---------------------------------------------------------------------------
    def create_flow(self, flow: Flow) -> Flow:
        """Register ``flow`` by name, or update the registered one; return the stored flow."""
        row = rows.flow_row(flow)

        def tx(conn: sa.Connection) -> Flow:
            stmt = self._insert(flows).values(row)
            keep = {"id", "name", "created"}
            stmt = stmt.on_conflict_do_update(
                index_elements=[flows.c.name],
                set_={k: stmt.excluded[k] for k in row if k not in keep},
            )
            conn.execute(stmt)
            stored = conn.execute(sa.select(flows).where(flows.c.name == flow.name)).one()
            return rows.read_flow(stored)

        try:
            return self._write(tx)
        except IntegrityError as exc:
            raise ObjectAlreadyExists(
                f"flow id {flow.id} is registered under another name than {flow.name!r}"
            ) from exc

    def read_flow(self, flow_id: UUID) -> Flow:
        """Return the flow with this id (``NotFound`` if none)."""
        row = self._read(lambda c: c.execute(sa.select(flows).where(flows.c.id == flow_id)).first())
        if row is None:
            raise NotFound("flow", flow_id)
        return rows.read_flow(row)

    def read_flow_by_name(self, name: str) -> Flow:
        """Return the flow with this name (``NotFound`` if none)."""
        row = self._read(lambda c: c.execute(sa.select(flows).where(flows.c.name == name)).first())
        if row is None:
            raise NotFound("flow", name)
        return rows.read_flow(row)

    def read_flows(self, *, limit: int = 100, offset: int = 0) -> list[Flow]:
        """Return flows ordered by name."""
        query = sa.select(flows).order_by(flows.c.name).limit(limit).offset(offset)
        return [rows.read_flow(r) for r in self._read(lambda c: c.execute(query).all())]

    # -- deployments ---------------------------------------------------------------------
    def create_deployment(self, deployment: DeploymentCreate) -> Deployment:
        """Create the deployment, or update the one with the same flow and name."""
        new = Deployment.model_validate(deployment.model_dump())
        try:
            return self._write(lambda conn: deployments_tx.upsert(conn, new))
        except IntegrityError as exc:
            raise ObjectAlreadyExists(f"cannot store deployment {new.name!r}: {exc.orig}") from exc

    def read_deployment(self, deployment_id: UUID) -> Deployment:
        """Return the deployment with this id (``NotFound`` if none)."""
        query = sa.select(deployments).where(deployments.c.id == deployment_id)
        found = self._read(lambda c: deployments_tx.read(c, query))
        if not found:
            raise NotFound("deployment", deployment_id)
        return found[0]

    def read_deployments(
        self, *, flow_id: UUID | None = None, limit: int = 100, offset: int = 0
    ) -> list[Deployment]:
        """Return deployments ordered by name, optionally of one flow."""
        query = sa.select(deployments).order_by(deployments.c.name, deployments.c.id)
        if flow_id is not None:
            query = query.where(deployments.c.flow_id == flow_id)
        query = query.limit(limit).offset(offset)
        return self._read(lambda c: deployments_tx.read(c, query))

    def update_deployment(self, deployment_id: UUID, **changes: Any) -> Deployment:
        """Change fields of a deployment (paused, schedules, parameters, ...)."""
        for key in changes.keys() & deployments_tx.FIXED_FIELDS:
            raise ValidationError(key, changes[key], "cannot be changed")
        try:
            return self._write(lambda c: deployments_tx.update(c, deployment_id, changes))
        except IntegrityError as exc:
            raise ObjectAlreadyExists(
                f"cannot update deployment {deployment_id}: {exc.orig}"
            ) from exc

    def delete_deployment(self, deployment_id: UUID) -> None:
        """Delete a deployment and its not-yet-started (SCHEDULED) runs; other runs keep theirs."""
        self._write(lambda c: deployments_tx.delete(c, deployment_id))

    # -- flow runs -----------------------------------------------------------------------
    def create_flow_run(self, flow_run: FlowRunCreate) -> FlowRun:
        """Create a flow run; with an idempotency key already used, return the existing run."""
        try:
            return self._write(lambda conn: flow_runs_tx.create(conn, flow_run))
        except IntegrityError as exc:
            if flow_run.idempotency_key is not None:
                # Another process created the run with this key at the same moment.
                existing = self._read(lambda c: flow_runs_tx.find_by_key(c, flow_run))
                if existing is not None:
                    return existing
            raise ObjectAlreadyExists(f"cannot create flow run: {exc.orig}") from exc

    def read_flow_run(self, flow_run_id: UUID) -> FlowRun:
        """Return the flow run with this id (``FlowRunNotFound`` if none)."""
        row = self._read(
            lambda c: c.execute(
                flow_runs_tx.RUN_SELECT.where(flow_runs.c.id == flow_run_id)
            ).first()
        )
        if row is None:
            raise FlowRunNotFound(flow_run_id)
        return rows.read_flow_run(row)

    def read_flow_runs(self, flow_run_filter: FlowRunFilter | None = None) -> list[FlowRun]:
        """Return flow runs matching the filter (newest first by default)."""
        f = flow_run_filter or FlowRunFilter()

        def tx(conn: sa.Connection) -> list[FlowRun]:
            query = run_list.page_query(run_list.by_flow_ids(conn, f))
            return [rows.read_flow_run(r) for r in conn.execute(query).all()]

        return self._read(tx)

    def count_flow_runs(self, flow_run_filter: FlowRunFilter | None = None) -> int:
        """Count flow runs matching the filter (ignoring limit and offset)."""
        f = flow_run_filter or FlowRunFilter()

        def tx(conn: sa.Connection) -> int:
            return int(
                conn.execute(run_list.count_query(run_list.by_flow_ids(conn, f))).scalar_one()
            )

        return self._read(tx)

    def set_flow_run_state(
        self, flow_run_id: UUID, state: State, *, force: bool = False
    ) -> OrchestrationResult:
        """Propose ``state`` through the orchestration gate; return its answer.

        The run's row is locked (``SELECT ... FOR UPDATE``; on SQLite the whole database
        is, by ``BEGIN IMMEDIATE``) while the policy decides, so concurrent proposals are
        decided one at a time: of N processes claiming a run, exactly one gets ACCEPT.
        """

        return self._write(lambda c: flow_runs_tx.set_state(c, flow_run_id, state, force=force))

    def propose_flow_run_state(
        self,
        flow_run_id: UUID,
        choose: Callable[[FlowRun], flow_runs_tx.Choice],
        *,
        force: bool = False,
    ) -> OrchestrationResult:
        """Like :meth:`set_flow_run_state`, with the state chosen from the locked run.

        ``choose`` sees the run under its row lock and returns the state to propose (or
        an answer to give without proposing); the lifecycle's cancel decides this way.
        """
        return self._write(lambda c: flow_runs_tx.propose(c, flow_run_id, choose, force=force))

    def claim_flow_runs(
        self,
        runners: Sequence[str],
        *,
        claimer: str,
        default_runner: str,
        limit: int | None = None,
        global_limit: int | None = None,
    ) -> list[claims.Claim]:
        """Claim due runs of ``runners`` within every concurrency limit, in one transaction.

        See :mod:`nbflow.orchestration.store.claims`: claimers are serialized, so two
        dispatchers on one database never exceed a limit together.
        """
        return self._write(
            lambda c: claims.claim_due_runs(
                c,
                runners,
                claimer=claimer,
                default_runner=default_runner,
                limit=limit,
                global_limit=global_limit,
            )
        )

    def read_concurrency_limits(self) -> list[ConcurrencyLimit]:
        """Return the flow and tag concurrency limits, by key."""
        return self._read(claims.read_limits)

    def set_concurrency_limit(self, key: str, limit: int) -> ConcurrencyLimit:
        """Create or change the limit of ``flow:<name>`` or ``tag:<tag>``."""
        return self._write(lambda c: claims.set_limit(c, key, limit))

    def delete_concurrency_limit(self, key: str) -> None:
        """Remove a concurrency limit (``NotFound`` if there is none)."""
        self._write(lambda c: claims.delete_limit(c, key))

    def read_flow_run_states(self, flow_run_id: UUID) -> list[State]:
        """Return the run's state history, oldest first."""

        def tx(conn: sa.Connection) -> list[State]:
            found = conn.execute(
                sa.select(flow_run_states.c.state_json)
                .where(flow_run_states.c.flow_run_id == flow_run_id)
                .order_by(flow_run_states.c.seq)
            ).all()
            if not found and not self._run_exists(conn, flow_run_id):
                raise FlowRunNotFound(flow_run_id)
            return [State.model_validate_json(r.state_json) for r in found]

        return self._read(tx)

    def _run_exists(self, conn: sa.Connection, flow_run_id: UUID) -> bool:
        query = sa.select(flow_runs.c.id).where(flow_runs.c.id == flow_run_id)
        return conn.execute(query).first() is not None

    def update_flow_run(self, flow_run_id: UUID, **changes: Any) -> FlowRun:
        """Set non-state fields (see ``UPDATABLE_FLOW_RUN_FIELDS``); return the run."""
        for key in changes.keys() - UPDATABLE_FLOW_RUN_FIELDS:
            raise ValidationError(
                key,
                changes[key],
                "cannot be changed with update_flow_run",
                f"change one of {', '.join(sorted(UPDATABLE_FLOW_RUN_FIELDS))}; "
                "states change through set_flow_run_state",
            )

        def tx(conn: sa.Connection) -> FlowRun:
            query = flow_runs_tx.RUN_SELECT.where(flow_runs.c.id == flow_run_id)
            row = conn.execute(query.with_for_update(of=flow_runs)).first()
            if row is None:
                raise FlowRunNotFound(flow_run_id)
            data = rows.read_flow_run(row).model_dump()
            try:
                updated = FlowRun.model_validate({**data, **changes, "updated": now()})
            except pydantic.ValidationError as exc:
                raise rows.validation_error(exc) from exc
            new_row = rows.flow_run_row(updated)
            values = {k: new_row[k] for k in (*changes, "updated")}
            conn.execute(sa.update(flow_runs).where(flow_runs.c.id == flow_run_id).values(values))
            return updated

        return self._write(tx)

    def heartbeat(self, flow_run_id: UUID) -> None:
        """Record that the process executing the run is alive."""
        stmt = sa.update(flow_runs).where(flow_runs.c.id == flow_run_id).values(heartbeat=now())
        if self._write(lambda c: c.execute(stmt).rowcount) == 0:
            raise FlowRunNotFound(flow_run_id)

    def delete_flow_run(self, flow_run_id: UUID) -> None:
        """Delete a flow run with its states, task runs, logs and artifacts."""
        stmt = sa.delete(flow_runs).where(flow_runs.c.id == flow_run_id)
        if self._write(lambda c: c.execute(stmt).rowcount) == 0:
            raise FlowRunNotFound(flow_run_id)

    def _raise_missing_runs(self, run_ids: Iterable[UUID | None]) -> None:
        wanted = {r for r in run_ids if r is not None}
        found = self._read(
            lambda c: set(
                c.execute(sa.select(flow_runs.c.id).where(flow_runs.c.id.in_(wanted))).scalars()
            )
        )
        for missing in sorted(wanted - found, key=str):
            raise FlowRunNotFound(missing)

    # -- task runs -----------------------------------------------------------------------
    def write_task_runs(
        self, task_runs_: Sequence[TaskRun], states: Sequence[tuple[UUID, State]] = ()
    ) -> None:
        """Upsert task runs (a newer ``updated`` wins) and append their states, in one batch.

        Replaying a batch is harmless: states are keyed by their id.
        """
        # Tuples in the driver's form, built straight from the models (batch.py).
        run_rows, state_rows = batch.task_run_params(
            task_runs_, states, sqlite=self.dialect == "sqlite"
        )
        upsert, append = self._task_run_upsert, self._task_run_state_append

        def tx(conn: sa.Connection) -> None:
            bulk_execute_rows(conn, upsert, task_runs, batch.TASK_RUN_KEYS, run_rows)
            bulk_execute_rows(conn, append, task_run_states, batch.STATE_KEYS, state_rows)

        try:
            self._write(tx)
        except IntegrityError as exc:
            self._raise_missing_runs(t.flow_run_id for t in task_runs_)
            raise NotFound("task run", f"of a state in the batch ({exc.orig})") from exc

    def read_task_runs(self, task_run_filter: TaskRunFilter | None = None) -> list[TaskRun]:
        """Return task runs matching the filter, oldest first."""
        f = task_run_filter or TaskRunFilter()
        query = sa.select(task_runs).order_by(task_runs.c.created, task_runs.c.id)
        if f.flow_run_ids is not None:
            query = query.where(task_runs.c.flow_run_id.in_(f.flow_run_ids))
        if f.state_types is not None:
            query = query.where(task_runs.c.state_type.in_([t.value for t in f.state_types]))
        query = query.limit(f.limit).offset(f.offset)
        return [rows.read_task_run(r) for r in self._read(lambda c: c.execute(query).all())]

    def read_task_run_states(self, task_run_id: UUID) -> list[State]:
        """Return a task run's state history, oldest first."""

        def tx(conn: sa.Connection) -> list[State]:
            found = conn.execute(
                sa.select(task_run_states.c.state_json)
                .where(task_run_states.c.task_run_id == task_run_id)
                .order_by(task_run_states.c.seq)
            ).all()
            if not found:
                exists = sa.select(task_runs.c.id).where(task_runs.c.id == task_run_id)
                if conn.execute(exists).first() is None:
                    raise NotFound("task run", task_run_id)
            return [State.model_validate_json(r.state_json) for r in found]

        return self._read(tx)

    def read_task_run_owners(self, task_run_ids: Collection[UUID]) -> dict[UUID, UUID | None]:
        """Return the flow run of each stored task run among ``task_run_ids`` (unknown: absent).

        The server checks a run token's batch with it: an id another run owns is refused.
        """
        if not task_run_ids:
            return {}
        query = sa.select(task_runs.c.id, task_runs.c.flow_run_id).where(
            task_runs.c.id.in_(list(task_run_ids))
        )
        return {r.id: r.flow_run_id for r in self._read(lambda c: c.execute(query).all())}

    # -- logs and artifacts --------------------------------------------------------------
    def write_logs(self, logs_: Sequence[Log]) -> None:
        """Append a batch of log records."""
        if not logs_:
            return
        log_rows = batch.log_params(logs_, sqlite=self.dialect == "sqlite")
        try:
            run_ids = {entry.flow_run_id for entry in logs_}

            def tx(c: sa.Connection) -> None:
                lock_log_streams(c, run_ids)  # ids visible in order: the cursor skips none
                bulk_execute_rows(c, _LOG_INSERT, logs, batch.LOG_KEYS, log_rows)

            self._write(tx)
        except IntegrityError:
            self._raise_missing_runs(entry.flow_run_id for entry in logs_)
            raise

    def read_logs(
        self,
        flow_run_id: UUID,
        *,
        cursor: int = 0,
        limit: int = 1000,
        task_run_id: UUID | None = None,
    ) -> tuple[list[Log], int]:
        """Return the run's logs after ``cursor`` (0: from the start) and the next cursor."""
        query = (
            sa.select(logs)
            .where(logs.c.flow_run_id == flow_run_id, logs.c.id > cursor)
            .order_by(logs.c.id)
            .limit(limit)
        )
        if task_run_id is not None:
            query = query.where(logs.c.task_run_id == task_run_id)
        found = self._read(lambda c: c.execute(query).all())
        next_cursor = found[-1].id if found else cursor
        return [rows.read_log(r) for r in found], int(next_cursor)

    def create_artifact(self, artifact: Artifact) -> Artifact:
        """Store an artifact (an output notebook, a result reference)."""
        try:
            self._write(
                lambda c: c.execute(sa.insert(artifacts).values(rows.artifact_row(artifact)))
            )
        except IntegrityError as exc:
            self._raise_missing_runs([artifact.flow_run_id])
            raise ObjectAlreadyExists(f"artifact {artifact.id} already exists") from exc
        return artifact

    def read_artifacts(
        self, *, flow_run_id: UUID | None = None, key: str | None = None
    ) -> list[Artifact]:
        """Return artifacts of a run and/or with a key, oldest first."""
        query = sa.select(artifacts).order_by(artifacts.c.created, artifacts.c.id)
        if flow_run_id is not None:
            query = query.where(artifacts.c.flow_run_id == flow_run_id)
        if key is not None:
            query = query.where(artifacts.c.key == key)
        return [rows.read_artifact(r) for r in self._read(lambda c: c.execute(query).all())]
