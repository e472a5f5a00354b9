"""``nbflow batch``: a parameter grid, a concurrency limit and a failure among the runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from nbflow.cli import main
from nbflow.client.embedded import EmbeddedClient
from nbflow.schemas import FlowRunFilter

pytestmark = pytest.mark.slow


def test_batch_limits_concurrency_and_survives_a_failure(
    client: EmbeddedClient,
    write_notebook: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_notebook(
        "grid.ipynb",
        ["n = 1\nregion = 'EU'", "assert n != 2, 'two is bad'", "print(region, n)"],
        parameters=0,
    )
    code = main(
        [
            "batch",
            str(path),
            "--grid",
            "n=1,2,3",
            "-p",
            "region=US",
            "--max-concurrency",
            "2",
            "--json",
        ]
    )
    assert code == 1
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert rows[0]["state"] != "Crashed", (rows, captured.err)
    assert [(r["parameters"], r["state"]) for r in rows] == [
        ({"region": "US", "n": 1}, "Completed"),
        ({"region": "US", "n": 2}, "Failed"),
        ({"region": "US", "n": 3}, "Completed"),
    ]
    assert "two is bad" in rows[1]["message"]
    assert all(Path(r["output_path"]).exists() for r in rows)
    # Never more than two runs in the Running state at the same moment.
    runs = client.read_flow_runs(FlowRunFilter())
    events = []
    for run in runs:
        states = client.read_flow_run_states(run.id)
        start = next(s.timestamp for s in states if s.name == "Running")
        end = states[-1].timestamp
        events += [(start, 1), (end, -1)]
    running = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        running += delta
        peak = max(peak, running)
    assert peak <= 2


def test_batch_rejects_a_bad_value_before_running_anything(
    client: EmbeddedClient,
    write_notebook: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_notebook("grid.ipynb", ["n = 1", "print(n)"], parameters=0)
    assert main(["batch", str(path), "--grid", "n=1,x"]) == 2
    assert "n='x': is not of type integer" in capsys.readouterr().err
    assert client.read_flow_runs(FlowRunFilter()) == []
