"""The session in an in-process IPython shell: the widget's Cancel button ends the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.testing import globalipapp

from nbflow.client import set_client
from nbflow.client.embedded import EmbeddedClient
from nbflow.engine import events
from nbflow.notebook.magics import NbflowMagics
from nbflow.schemas import FlowRunFilter, TaskRunFilter
from nbflow.states import Running, StateType


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[tuple[Any, EmbeddedClient]]:
    client = EmbeddedClient.from_url(f"sqlite:///{tmp_path / 'nbflow.db'}")
    previous = set_client(client)
    # One shell per process (the first call starts it); each test gets a fresh session.
    ip = globalipapp.start_ipython() or globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "nbflow")
    try:
        yield ip, client
    finally:
        ip.run_line_magic("nbflow", "finish")
        ip.run_line_magic("unload_ext", "nbflow")
        set_client(previous)
        client.close()


def _session(ip: Any) -> Any:
    magics = ip.magics_manager.registry["NbflowMagics"]
    assert isinstance(magics, NbflowMagics)
    return magics.session


def test_cancel_button_between_cells_cancels_the_run(shell: tuple[Any, EmbeddedClient]) -> None:
    ip, client = shell
    ip.run_cell("%%flow buttons\nn = 1")
    ip.run_cell("%%task first\na = n + 1")
    session = _session(ip)
    run_id = session.run.engine.flow_run.id
    session.display.widget.cancel_button.click()
    run = client.read_flow_run(run_id)
    assert run.state is not None and run.state.type is StateType.CANCELLED
    assert session.display.widget.cancel_button.disabled
    # the next task cell starts a fresh run
    ip.run_cell("%%task second\nb = a + 1")
    assert ip.user_ns["b"] == 3
    ip.run_line_magic("nbflow", "finish")  # flushes the recorder: task runs are in the store
    runs = client.read_flow_runs(FlowRunFilter(flow_names=["buttons"]))
    assert len(runs) == 2
    new = next(r for r in runs if r.id != run_id)
    names = [t.name for t in client.read_task_runs(TaskRunFilter(flow_run_ids=[new.id]))]
    assert names == ["second"]


def test_cancel_of_the_current_run_ends_it_and_its_widget_stops_listening(
    shell: tuple[Any, EmbeddedClient], capsys: pytest.CaptureFixture[str]
) -> None:
    ip, client = shell
    ip.run_cell("%%flow parts\nn = 1")
    ip.run_cell("%%task first\na = n + 1")
    session = _session(ip)
    run_id = session.run.flow_run_id
    widget = session.display.widget
    ip.run_line_magic("nbflow", "cancel")
    assert session.run.flow_run_id is None
    run = client.read_flow_run(run_id)
    assert run.state is not None and run.state.type is StateType.CANCELLED
    assert not events.has_subscribers()  # the finished run's widget no longer listens
    events.emit(events.FlowRunEvent(run_id, Running()))
    assert widget.flow_state.type is StateType.CANCELLED
    capsys.readouterr()
    ip.run_line_magic("nbflow", "status")  # still shows the last run
    assert "Cancelled" in capsys.readouterr().out
    ip.run_cell("%%flow parts\nn = 2")
    assert session.display.widget is not widget
    assert session.run.flow_run_id not in (None, run_id)


def test_a_failed_task_fails_the_run_by_its_name_and_the_dag_outlives_the_run(
    shell: tuple[Any, EmbeddedClient],
) -> None:
    ip, client = shell
    ip.run_cell("%%flow dag\nn = 1")
    ip.run_cell("%%task make\na = n + 1")
    ip.run_cell("%%task broken\nb = a / 0")
    ip.run_line_magic("nbflow", "finish")
    (run,) = client.read_flow_runs(FlowRunFilter(flow_names=["dag"]))
    assert run.state is not None and run.state.type is StateType.FAILED
    # Failed at once, naming the task and its error (no `%nbflow finish` needed).
    assert run.state.message == "task 'broken' failed: ZeroDivisionError: division by zero"
    # A new run keeps the notebook's DAG: `a` still comes from `make`.
    ip.run_cell("%%flow dag\nn = 1")
    ip.run_cell("%%task use\nc = a * 2")
    ip.run_line_magic("nbflow", "finish")
    second = next(
        r for r in client.read_flow_runs(FlowRunFilter(flow_names=["dag"])) if r.id != run.id
    )
    (use,) = client.read_task_runs(TaskRunFilter(flow_run_ids=[second.id]))
    assert use.inputs == ["a"]
    assert use.upstream == []  # `make` ran in the previous run: no task run of this one
    session = _session(ip)
    assert session.graph.producers["a"] == "make"


def test_nbflow_cancel_of_a_scheduled_run_in_the_embedded_store_cancels_it(
    shell: tuple[Any, EmbeddedClient], capsys: pytest.CaptureFixture[str]
) -> None:
    # Reproduction: `%nbflow cancel` on a Scheduled run left it Cancelling for ever.
    from nbflow.schemas import Flow, FlowRunCreate

    ip, client = shell
    flow = client.create_flow(Flow(name="later"))
    run = client.create_flow_run(FlowRunCreate(flow_id=flow.id, mode="batch"))
    ip.run_line_magic("nbflow", f"cancel {run.id}")
    stored = client.read_flow_run(run.id)
    assert stored.state is not None and stored.state.type is StateType.CANCELLED
    assert "Cancelled" in capsys.readouterr().out


def test_a_late_click_of_an_old_widget_leaves_the_newer_run_alone(
    shell: tuple[Any, EmbeddedClient],
) -> None:
    # In JupyterLab the click cancels through the server at once; its comm message reaches
    # the kernel later, possibly after a newer run started: it must not cancel that one.
    ip, client = shell
    ip.run_cell("%%flow late_clicks\nn = 1")
    session = _session(ip)
    old_widget = session.display.widget
    old_run = session.run.engine.flow_run.id
    assert {"nbflow-cancel-run", f"nbflow-run-{old_run}"} <= set(
        old_widget.cancel_button._dom_classes
    )
    ip.run_line_magic("nbflow", "finish")
    ip.run_cell("%%flow late_clicks\nn = 2")
    new_run = session.run.engine.flow_run.id
    assert new_run != old_run
    old_widget.cancel_button.click()
    state = client.read_flow_run(new_run).state
    assert state is not None and state.type is StateType.RUNNING
