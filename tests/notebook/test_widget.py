"""The flow-run widget driven by engine events (no kernel needed: ipywidgets works without one)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from nbflow.engine.events import FlowRunEvent, TaskRunEvent
from nbflow.notebook.widget import TICK_SECONDS, FlowRunWidget, format_seconds, plural
from nbflow.schemas import TaskRun
from nbflow.states import Cached, Cancelled, Completed, Failed, Running, State, now


class ManualScheduler:
    """Collect deferred flushes instead of running them on a timer."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], None]] = []
        self.delays: list[float] = []

    def __call__(self, delay: float, fn: Callable[[], None]) -> None:
        self.calls.append(fn)
        self.delays.append(delay)

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
    bundle, metadata = w._repr_mimebundle_()
    assert metadata["nbflow"]["flow_run_id"] == str(run_id)
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "extract" in bundle["text/html"] and "1 of 1 task finished" in bundle["text/html"]
    assert "flow sales [Cancelled]" in bundle["text/plain"]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.at = now()

    def __call__(self) -> datetime:
        return self.at


def test_running_task_and_run_durations_count_up_then_ticking_stops() -> None:
    clock, sched, run_id = Clock(), ManualScheduler(), uuid.uuid4()
    w = FlowRunWidget(run_id, "sales", scheduler=sched, clock=clock)
    started = clock.at
    w.handle(FlowRunEvent(run_id, Running(timestamp=started)))
    task = TaskRun(
        flow_run_id=run_id, name="slow", task_key="slow", run_count=1, start_time=started
    )
    w.handle(TaskRunEvent(run_id, task, Running(timestamp=started)))
    sched.run()  # the deferred flush; it asks for a tick since a task runs
    assert sched.delays[-1] == TICK_SECONDS and len(sched.calls) == 1
    clock.at = started + timedelta(seconds=12.5)
    sched.run()  # the tick: redraw with the clock moved, and ask for the next one
    assert "12.5 s" in w.table.value  # the running task's live duration
    assert "running for 12.5 s" in w.header.value  # the run's
    assert len(sched.calls) == 1
    finished = started + timedelta(seconds=20)
    done = task.model_copy(update={"end_time": finished})
    w.handle(TaskRunEvent(run_id, done, Completed(timestamp=finished)))
    w.handle(FlowRunEvent(run_id, Completed(timestamp=finished)))
    clock.at = finished + timedelta(minutes=5)
    sched.run()  # the pending tick finds nothing running: no further tick
    assert sched.calls == []
    assert "total 20.0 s" in w.header.value and "20.0 s" in w.table.value
    assert "(20.0 s)" in w.to_text()


def test_finished_run_hides_the_cancel_button() -> None:
    w, _sched, run_id = _widget()
    assert w.cancel_button.button_style == "warning" and w.cancel_button.icon == "stop"
    w.handle(FlowRunEvent(run_id, Running()))
    w.handle(FlowRunEvent(run_id, Failed()))
    button = w.cancel_button
    assert button.disabled and button.layout.display == "none"
    assert button.button_style == "" and button.icon == ""


def test_cancel_click_shows_cancelling_without_the_stop_colour() -> None:
    w = FlowRunWidget(uuid.uuid4(), "f", on_cancel=lambda: None)
    w.cancel_button.click()
    assert w.cancel_button.description == "Cancelling..."
    assert w.cancel_button.button_style == "" and w.cancel_button.icon == "hourglass-half"


def test_retries_are_counted_in_words() -> None:
    w, sched, run_id = _widget()
    w.handle(TaskRunEvent(run_id, _task(run_id, "once", run_count=2), Completed()))
    w.handle(TaskRunEvent(run_id, _task(run_id, "twice", run_count=3), Completed()))
    w.handle(TaskRunEvent(run_id, _task(run_id, "never", run_count=1), Completed()))
    sched.run()
    assert "1 retry<" in w.table.value and "2 retries<" in w.table.value
    assert "1 retries" not in w.table.value and "0 retries" not in w.table.value
    assert "once: Completed [1 retry]" in w.to_text()
    assert [plural(n, "task") for n in (0, 1, 2)] == ["0 tasks", "1 task", "2 tasks"]
    assert [format_seconds(s) for s in (0.5, 12.25, 125, 3725)] == [
        "0.50 s",
        "12.2 s",
        "2 min 05 s",
        "1 h 02 min",
    ]
