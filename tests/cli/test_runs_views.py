"""``nbflow runs ls --history | --upcoming``: past runs and waiting scheduled runs apart."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from nbflow.client.embedded import EmbeddedClient
from nbflow.schemas import Flow, FlowRunCreate
from nbflow.states import Completed, Pending, Running, Scheduled, now
from tests.cli.conftest import Result

Runner = Callable[..., Result]


def test_history_and_upcoming(nbflow: Runner, nbflow_home: Path) -> None:
    store = EmbeddedClient.from_url(f"sqlite:///{nbflow_home / 'nbflow.db'}")
    try:
        flow = store.create_flow(Flow(name="daily"))
        done = store.create_flow_run(FlowRunCreate(flow_id=flow.id, mode="batch"))
        for state in (Pending(), Running(), Completed()):
            store.set_flow_run_state(done.id, state)
        later, soon = (
            store.create_flow_run(
                FlowRunCreate(
                    flow_id=flow.id,
                    mode="batch",
                    state=Scheduled(scheduled_time=now() + timedelta(hours=hours)),
                )
            )
            for hours in (2, 1)
        )
    finally:
        store.close()

    upcoming = nbflow("runs", "ls", "--upcoming", "--json")
    assert upcoming.code == 0, upcoming.err
    assert [r["id"] for r in upcoming.json()] == [str(soon.id), str(later.id)]
    history = nbflow("runs", "ls", "--history", "--json")
    assert [r["id"] for r in history.json()] == [str(done.id)]
    assert len(nbflow("runs", "ls", "--json").json()) == 3

    table = nbflow("runs", "ls", "--upcoming").out.splitlines()
    assert table[0].split() == ["ID", "NAME", "FLOW", "STATE", "DUE", "DURATION"]
    assert table[1].startswith(str(soon.id)[:8]) and " Scheduled " in table[1]
    both = nbflow("runs", "ls", "--upcoming", "--history")
    assert both.code == 2 and "not allowed with" in both.err
