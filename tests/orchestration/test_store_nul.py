"""PostgreSQL text cannot hold NUL: one bad line never drops a batch (the issue's reproduction)."""

from __future__ import annotations

from nbflow.orchestration.store import Store
from nbflow.schemas import Flow, FlowRunCreate, Log, TaskRun, TaskRunFilter
from nbflow.states import Completed, State, StateType

REPLACEMENT = "\ufffd"


def test_a_log_batch_with_a_nul_line_keeps_every_line(store: Store) -> None:
    run = store.create_flow_run(FlowRunCreate(flow_id=store.create_flow(Flow(name="logs")).id))
    lines = ["before", "a\x00b", "after"]
    # model_construct, as the engine's recorder builds them: no validator runs.
    batch = [
        Log.model_construct(**Log(flow_run_id=run.id, message=m, logger="nb\x00flow").__dict__)
        for m in lines
    ]
    store.write_logs(batch)
    logs, _ = store.read_logs(run.id)
    assert [entry.message for entry in logs] == ["before", f"a{REPLACEMENT}b", "after"]
    assert {entry.logger for entry in logs} == {f"nb{REPLACEMENT}flow"}


def test_task_run_text_with_nul_is_kept_escaped(store: Store) -> None:
    run = store.create_flow_run(FlowRunCreate(flow_id=store.create_flow(Flow(name="tr")).id))
    state = State(type=StateType.COMPLETED, name="Done\x00", message="m\x00")
    task = TaskRun.model_construct(
        **TaskRun(
            flow_run_id=run.id,
            name="t\x00",
            task_key="k\x00",
            cache_key="c\x00",
            state=state,
        ).__dict__
    )
    other = TaskRun(flow_run_id=run.id, name="fine", task_key="fine", state=Completed())
    store.write_task_runs([task, other], [(task.id, state), (other.id, Completed())])
    stored = {t.task_key: t for t in store.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))}
    assert set(stored) == {f"k{REPLACEMENT}", "fine"}
    kept = stored[f"k{REPLACEMENT}"]
    assert kept.name == f"t{REPLACEMENT}" and kept.cache_key == f"c{REPLACEMENT}"
    # The state itself is stored as JSON text, where a NUL is an escape sequence that
    # PostgreSQL keeps as is: it reads back exact.
    assert kept.state is not None and (kept.state.name, kept.state.message) == ("Done\x00", "m\x00")
    assert [s.name for s in store.read_task_run_states(task.id)] == ["Done\x00"]
