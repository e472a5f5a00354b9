"""The flow-run widget driven by engine events (no kernel needed: ipywidgets works without one)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta

from nbflow.engine.events import FlowRunEvent, TaskRunEvent
from nbflow.schemas import TaskRun
from nbflow.states import Cached, Cancelled, Completed, Failed, Running, State, now
from nbflow.notebook.widget import FlowRunWidget


class ManualScheduler:
    """Collect deferred flushes instead of running them on a timer."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], None]] = []

    def __call__(self, delay: float, fn: Callable[[], None]) -> None:
        self.calls.append(fn)

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for fn in calls:
            fn()


def _task(flow_run_id: uuid.UUID, key: str, run_count: int = 1, **kw: object) -> TaskRun:
    start = now() - timedelta(seconds=2)
    return TaskRun(
        flow_run_id=flow_run_id,
        name=key,
        task_key=key,
        run_count=run_count,
        start_time=start,
        end_time=start + timedelta(seconds=1.5),
        **kw,  # type: ignore[arg-type]
    )


def _widget() -> tuple[FlowRunWidget, ManualScheduler, uuid.UUID]:
    sched = ManualScheduler()
    run_id = uuid.uuid4()
    return FlowRunWidget(run_id, "sales", run_name="brave-otter", scheduler=sched), sched, run_id


def test_rows_follow_task_events() -> None:
    w, sched, run_id = _widget()
    w.handle(FlowRunEvent(run_id, Running()))
    extract = _task(run_id, "extract", run_count=3)
    w.handle(TaskRunEvent(run_id, extract, Running()))
    w.handle(TaskRunEvent(run_id, extract, Completed()))
    w.handle(TaskRunEvent(run_id, _task(run_id, "load"), Cached()))
    w.handle(
        TaskRunEvent(
            run_id, _task(run_id, "report"), Failed(message="Traceback...\nKeyError: 'shop'")
        )
    )
    sched.run()
    rows = w.rows
    assert rows["extract"].state is not None and rows["extract"].state.name == "Completed"
    assert rows["extract"].retries == 2
    assert rows["extract"].duration == 1.5
    assert rows["load"].cached
    assert rows["report"].error == "KeyError: 'shop'"
    assert (w.progress.value, w.progress.max, w.progress.bar_style) == (3, 3, "danger")
    html = w.table.value
    assert "extract" in html and "hit" in html and "KeyError" in html
    assert "Running" in w.header.value and "brave-otter" in w.header.value


def test_events_of_other_runs_are_ignored() -> None:
    w, sched, _run_id = _widget()
    other = uuid.uuid4()
    w.handle(TaskRunEvent(other, _task(other, "x"), Running()))
    w.handle(FlowRunEvent(other, Completed()))
    sched.run()
    assert w.rows == {} and w.flow_state is None and w.flush_count == 0


def test_bursts_are_coalesced_latest_state_wins() -> None:
    w, sched, run_id = _widget()
    task = _task(run_id, "t")
    for i in range(1000):
        w.handle(TaskRunEvent(run_id, task, Running(message=str(i))))
    assert len(sched.calls) == 1  # one deferred flush for the whole burst
    assert w.flush_count == 0
    sched.run()
    assert w.flush_count == 1
    assert w.rows["t"].state is not None and w.rows["t"].state.message == "999"


def test_terminal_flow_state_flushes_at_once_and_disables_cancel() -> None:
    w, _sched, run_id = _widget()
    w.handle(TaskRunEvent(run_id, _task(run_id, "t"), Completed()))
    w.handle(FlowRunEvent(run_id, Completed()))
    assert w.flush_count == 1
    assert w.cancel_button.disabled
    assert "Completed" in w.header.value


def test_events_from_many_threads() -> None:
    w, sched, run_id = _widget()

    def emit(n: int) -> None:
        for i in range(200):
            w.handle(TaskRunEvent(run_id, _task(run_id, f"t{n}", run_count=i), Running()))

    threads = [threading.Thread(target=emit, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sched.run()
    assert sorted(w.rows) == [f"t{n}" for n in range(8)]
    assert all(r.run_count == 199 for r in w.rows.values())


def test_cancel_button_calls_back() -> None:
    called: list[bool] = []
    w = FlowRunWidget(uuid.uuid4(), "f", on_cancel=lambda: called.append(True))
    w.cancel_button.click()
    assert called == [True]
    assert w.cancel_button.disabled


def test_stale_marking_clears_when_the_task_runs_again() -> None:
    w, sched, run_id = _widget()
    w.handle(TaskRunEvent(run_id, _task(run_id, "report"), Completed()))
    w.mark_stale(["report", "unknown"])
    sched.run()
    assert w.rows["report"].stale and "stale" in w.table.value
    w.handle(TaskRunEvent(run_id, _task(run_id, "report"), Completed()))
    sched.run()
    assert not w.rows["report"].stale


def test_late_event_of_an_older_task_run_is_dropped() -> None:
    w, _sched, run_id = _widget()
    old_state = Completed()
    newer = _task(run_id, "t")
    w.handle(TaskRunEvent(run_id, newer, Running()))
    w.handle(TaskRunEvent(run_id, _task(run_id, "t"), State.model_validate(old_state.model_dump())))
    assert w.rows["t"].task_run_id == newer.id


def test_mimebundle_has_widget_view_and_static_html() -> None:
    w, _sched, run_id = _widget()
    w.handle(TaskRunEvent(run_id, _task(run_id, "extract"), Completed()))
    w.handle(FlowRunEvent(run_id, Cancelled()))
    bundle = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "extract" in bundle["text/html"] and "1/1 tasks finished" in bundle["text/html"]
    assert "flow sales [Cancelled]" in bundle["text/plain"]
