"""Runs of known ages and states with their rows and files, for the retention tests.

:class:`World` builds, on a real store, runs that ran task runs (each with a persisted
result), logged, wrote an output notebook under its ``NBFLOW_HOME`` and ended some time
ago, and counts what is left of them after a prune.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from uuid import UUID

import sqlalchemy as sa

from nbflow.engine.results import ResultStore
from nbflow.engine.retention import PruneSummary, prune_flow_runs
from nbflow.orchestration.store import Store
from nbflow.orchestration.store.tables import (
    artifacts,
    flow_run_states,
    flow_runs,
    logs,
    task_run_states,
    task_runs,
)
from nbflow.schemas import Artifact, Flow, FlowRun, FlowRunCreate, Log, TaskRun
from nbflow.states import Completed, Running, State, now

__all__ = ["MONTH", "OLD", "World"]

OLD = timedelta(days=40)
MONTH = timedelta(days=30)


class World:
    """A store with one flow, result storage and an NBFLOW_HOME, and helpers to fill them."""

    def __init__(self, store: Store, root: Path, *, home: Path | None = None) -> None:
        self.store = store
        self.home = home or root / "home"
        self.results = ResultStore(str(self.home / "results"))
        self.flow = store.create_flow(Flow(name="report", parameters_schema={}))

    def run(
        self,
        *,
        end: State | None = None,
        age: timedelta = timedelta(0),
        tasks: int = 2,
        parent: UUID | None = None,
        retry_of: UUID | None = None,
    ) -> FlowRun:
        """Create a run that started, ran ``tasks`` task runs (each with a result file, a
        log and an output notebook) and ended in ``end`` (None: still running), ``age`` ago."""
        run = self.store.create_flow_run(
            FlowRunCreate(
                flow_id=self.flow.id,
                state=Running(),
                parent_flow_run_id=parent,
                retry_of=retry_of,
            )
        )
        written = []
        for i in range(tasks):
            task = TaskRun(flow_run_id=run.id, name=f"t{i}", task_key=f"t{i}")
            key = str(task.id)
            self.results.write(key, {"i": i})
            task.state = Completed(data={"result_key": key})
            written.append(task)
        self.store.write_task_runs(written, [(t.id, t.state) for t in written if t.state])
        self.store.write_logs([Log(flow_run_id=run.id, message="hello", timestamp=now())])
        out = self.home / "outputs" / "report" / f"{run.id}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("{}")
        self.store.update_flow_run(run.id, output_path=str(out))
        self.store.create_artifact(
            Artifact(flow_run_id=run.id, key="output-notebook", kind="notebook", uri=str(out))
        )
        if end is not None:
            self.store.set_flow_run_state(run.id, end)
        if age:
            self.age(run.id, age)
        return self.store.read_flow_run(run.id)

    def age(self, run_id: UUID, age: timedelta) -> None:
        """Move the run's creation and end ``age`` into the past."""
        at = now() - age
        runs = sa.update(flow_runs).where(flow_runs.c.id == run_id)
        stmt = runs.values(created=at, expected_start_time=at)
        # Only a run that ended has an end to move (a run that never started has none).
        stmt_end = runs.where(flow_runs.c.end_time.is_not(None)).values(end_time=at)
        self.store.write_transaction(lambda c: (c.execute(stmt), c.execute(stmt_end)))

    def rows(self, run_id: UUID) -> dict[str, int]:
        """Count the rows of every table that belong to the run."""
        task_ids = sa.select(task_runs.c.id).where(task_runs.c.flow_run_id == run_id)
        queries = {
            "flow_runs": flow_runs.c.id == run_id,
            "flow_run_states": flow_run_states.c.flow_run_id == run_id,
            "task_runs": task_runs.c.flow_run_id == run_id,
            "task_run_states": task_run_states.c.task_run_id.in_(task_ids),
            "logs": logs.c.flow_run_id == run_id,
            "artifacts": artifacts.c.flow_run_id == run_id,
        }
        tables = {
            "flow_runs": flow_runs,
            "flow_run_states": flow_run_states,
            "task_runs": task_runs,
            "task_run_states": task_run_states,
            "logs": logs,
            "artifacts": artifacts,
        }

        def tx(c: sa.Connection) -> dict[str, int]:
            return {
                name: int(
                    c.execute(
                        sa.select(sa.func.count()).select_from(tables[name]).where(where)
                    ).scalar_one()
                )
                for name, where in queries.items()
            }

        return self.store.read_transaction(tx)

    def files(self, run: FlowRun) -> list[Path]:
        """Return the run's result files and output notebook that exist."""
        keys = [t.id for t in self.store.read_task_runs() if t.flow_run_id == run.id]
        paths = [Path(self.results.location) / str(k) for k in keys]
        paths.append(self.home / "outputs" / "report" / f"{run.id}.ipynb")
        return [p for p in paths if p.exists()]

    def prune(self, **kwargs: object) -> PruneSummary:
        return prune_flow_runs(
            self.store,
            older_than=kwargs.pop("older_than", MONTH),  # type: ignore[arg-type]
            results=self.results,
            home=self.home,
            **kwargs,  # type: ignore[arg-type]
        )
