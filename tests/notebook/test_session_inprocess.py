"""The session in an in-process IPython shell: the widget's Cancel button ends the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.testing.globalipapp import start_ipython

from nbflow.client import set_client
from nbflow.client.embedded import EmbeddedClient
from nbflow.notebook.magics import NbflowMagics
from nbflow.schemas import FlowRunFilter, TaskRunFilter
from nbflow.states import StateType


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[tuple[Any, EmbeddedClient]]:
    client = EmbeddedClient.from_url(f"sqlite:///{tmp_path / 'nbflow.db'}")
    previous = set_client(client)
    ip = start_ipython()
    ip.run_line_magic("load_ext", "nbflow")
    try:
        yield ip, client
    finally:
        ip.run_line_magic("nbflow", "finish")
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
    run_id = session.engine.flow_run.id
    session.widget.cancel_button.click()
    run = client.read_flow_run(run_id)
    assert run.state is not None and run.state.type is StateType.CANCELLED
    assert session.widget.cancel_button.disabled
    # the next task cell starts a fresh run
    ip.run_cell("%%task second\nb = a + 1")
    assert ip.user_ns["b"] == 3
    ip.run_line_magic("nbflow", "finish")  # flushes the recorder: task runs are in the store
    runs = client.read_flow_runs(FlowRunFilter(flow_names=["buttons"]))
    assert len(runs) == 2
    new = next(r for r in runs if r.id != run_id)
    names = [t.name for t in client.read_task_runs(TaskRunFilter(flow_run_ids=[new.id]))]
    assert names == ["second"]
