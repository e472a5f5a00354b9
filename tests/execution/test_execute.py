"""``nbflow execute`` through the subprocess runner: real processes, kernels and store."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nbflow.cli.notebook_run import create_notebook_run, launch, prepare_notebook
from nbflow.client.embedded import EmbeddedClient
from nbflow.exceptions import ParameterError
from nbflow.runners.subprocess import SubprocessRunner
from nbflow.schemas import DeploymentCreate, Flow, FlowRun, FlowRunCreate, TaskRunFilter
from nbflow.settings import Settings
from nbflow.states import Pending, StateType
from tests.process_state import alive

pytestmark = pytest.mark.slow


def _run(
    client: EmbeddedClient, path: Path, parameters: dict[str, Any] | None = None
) -> tuple[FlowRun, SubprocessRunner, str]:
    runner = SubprocessRunner(client=client)
    run = create_notebook_run(client, prepare_notebook(path), parameters or {})
    return run, runner, launch(client, run, runner)


def _outputs(path: str) -> list[str]:
    nb = json.loads(Path(path).read_text())
    return ["".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", [])]


def test_completed_with_injected_parameters_and_output_notebook(
    client: EmbeddedClient, write_notebook: Callable[..., Path], settings: Settings
) -> None:
    path = write_notebook(
        "params.ipynb",
        ["import os", "region = 'EU'\nn = 1", "print(region * n)", "print(os.getcwd())"],
        parameters=1,
    )
    run, runner, infra = _run(client, path, {"region": "US", "n": 2})
    assert runner.wait(infra, timeout=240) == 0
    final = client.read_flow_run(run.id)
    assert final.state is not None and final.state.type is StateType.COMPLETED, final.state
    assert [s.name for s in client.read_flow_run_states(run.id)] == [
        "Pending",
        "Running",
        "Completed",
    ]
    assert final.output_path and final.output_path.startswith(str(settings.home))
    outputs = _outputs(final.output_path)
    assert "USUS\n" in outputs
    assert f"{path.parent}\n" in outputs  # the kernel runs in the notebook's directory
    nb = json.loads(Path(final.output_path).read_text())
    assert "injected-parameters" in nb["cells"][2]["metadata"]["tags"]
    artifacts = client.read_artifacts(flow_run_id=run.id)
    assert [(a.kind, a.uri) for a in artifacts] == [("notebook", final.output_path)]
    logs = client.read_logs(run.id).logs
    assert any("USUS" in log.message for log in logs)
    # No %%task cells: the notebook is one task, named after the file.
    tasks = client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))
    assert [(t.name, t.state.name if t.state else None) for t in tasks] == [("params", "Completed")]


def test_failed_cell_keeps_its_traceback(
    client: EmbeddedClient, write_notebook: Callable[..., Path]
) -> None:
    path = write_notebook("fails.ipynb", ["x = 1", "raise ValueError('bad x')", "print('never')"])
    run, runner, infra = _run(client, path)
    assert runner.wait(infra, timeout=240) == 1
    final = client.read_flow_run(run.id)
    state = final.state
    assert state is not None and state.type is StateType.FAILED
    assert state.message is not None and "ValueError: bad x" in state.message
    assert state.data["cell_index"] == 1 and state.data["ename"] == "ValueError"
    assert any("bad x" in line for line in state.data["traceback"])
    assert final.output_path is not None
    nb = json.loads(Path(final.output_path).read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert errors and errors[0]["evalue"] == "bad x"
    assert "never" not in "".join(_outputs(final.output_path))


def test_bad_parameters_are_refused_before_anything_runs(
    client: EmbeddedClient, write_notebook: Callable[..., Path]
) -> None:
    path = write_notebook("p.ipynb", ["n = 1", "print(n)"], parameters=0)
    spec = prepare_notebook(path)
    with pytest.raises(ParameterError, match="n='x': is not of type integer"):
        create_notebook_run(client, spec, {"n": "x"})
    # The lifecycle refuses such a run at creation; one whose stored parameters are wrong
    # anyway (written to the store directly, or a schema changed since) fails cleanly.
    good = create_notebook_run(client, spec, {"n": 2})
    with pytest.raises(ParameterError, match=r"parameters\.m"):
        client.create_flow_run(FlowRunCreate(flow_id=good.flow_id, parameters={"m": 3}))
    run = client.store.create_flow_run(
        FlowRunCreate(
            flow_id=good.flow_id,
            parameters={"m": 3},
            state=Pending(),
            notebook_path=str(path),
            mode="batch",
        )
    )
    runner = SubprocessRunner(client=client)
    infra = launch(client, run, runner)
    assert runner.wait(infra, timeout=240) == 1
    state = client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.FAILED
    assert state.message is not None and "m=3: unknown parameter of this flow" in state.message


def _wait_running(client: EmbeddedClient, run: FlowRun, marker: Path) -> None:
    for _ in range(2400):
        if marker.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"run never reached its sleeping cell: {client.read_flow_run(run.id)}")


SLEEPY = ["import pathlib, time", "pathlib.Path('started').write_text('1')", "time.sleep(600)"]


def test_sigterm_reschedules(
    client: EmbeddedClient, write_notebook: Callable[..., Path], tmp_path: Path
) -> None:
    run, runner, infra = _run(client, write_notebook("sleepy.ipynb", SLEEPY))
    _wait_running(client, run, tmp_path / "started")
    runner.kill(infra, grace_seconds=120)
    assert runner.wait(infra) == 0
    state = client.read_flow_run(run.id).state
    assert state is not None and state.name == "AwaitingRetry", state


def test_cancel_with_grace_ends_cancelled(
    client: EmbeddedClient, write_notebook: Callable[..., Path], tmp_path: Path
) -> None:
    run, runner, infra = _run(client, write_notebook("sleepy.ipynb", SLEEPY))
    _wait_running(client, run, tmp_path / "started")
    runner.cancel(client.read_flow_run(run.id), grace_seconds=120)
    assert runner.wait(infra) == 0
    states = [s.name for s in client.read_flow_run_states(run.id)]
    assert states[-2:] == ["Cancelling", "Cancelled"], states


def test_a_cancel_nobody_acts_on_stops_the_run_itself(
    client: EmbeddedClient, write_notebook: Callable[..., Path], tmp_path: Path
) -> None:
    # No dispatcher, worker or caller stops it (a pipeline's caller killed outright, a
    # worker that is down): the run is only marked Cancelling in the store.
    cells = [
        *SLEEPY[:2],
        "import os\npathlib.Path('kernel.pid').write_text(str(os.getpid()))",
        SLEEPY[2],
    ]
    run, runner, infra = _run(client, write_notebook("sleepy.ipynb", cells))
    _wait_running(client, run, tmp_path / "started")
    for _ in range(600):
        if (tmp_path / "kernel.pid").exists():
            break
        time.sleep(0.05)
    kernel_pid = int((tmp_path / "kernel.pid").read_text())
    client.cancel_flow_run(run.id)
    assert runner.wait(infra, timeout=120) == 0
    states = [s.name for s in client.read_flow_run_states(run.id)]
    assert states[-2:] == ["Cancelling", "Cancelled"], states
    deadline = time.monotonic() + 30  # the kernel is stopped, then reaped by its parent
    while alive(kernel_pid):
        assert time.monotonic() < deadline, f"the run's kernel {kernel_pid} still runs"
        time.sleep(0.2)


def test_sigkill_is_crashed_with_the_signal(
    client: EmbeddedClient, write_notebook: Callable[..., Path], tmp_path: Path
) -> None:
    run, runner, infra = _run(client, write_notebook("sleepy.ipynb", SLEEPY))
    _wait_running(client, run, tmp_path / "started")
    pid = int(infra.rpartition(":")[2])
    os.killpg(pid, signal.SIGKILL)
    assert runner.wait(infra) == -signal.SIGKILL
    state = client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.CRASHED
    assert state.message is not None and "killed by signal 9" in state.message


FLOW_NOTEBOOK = [
    "%load_ext nbflow",
    "%%flow sales\nregion = 'EU'\nn = 2",
    "%%task extract\nraw = [region] * n",
    "%%task report\nassert n < 5, 'too many'\nprint(len(raw), raw)",
]


def test_task_cells_report_under_the_flow_run(
    client: EmbeddedClient, write_notebook: Callable[..., Path]
) -> None:
    run, runner, infra = _run(client, write_notebook("flow.ipynb", FLOW_NOTEBOOK), {"n": 3})
    assert runner.wait(infra, timeout=240) == 0
    final = client.read_flow_run(run.id)
    assert final.state is not None and final.state.type is StateType.COMPLETED, final.state
    assert final.flow_name == "sales"
    tasks = client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))
    assert [(t.name, t.state.name if t.state else None) for t in tasks] == [
        ("extract", "Completed"),
        ("report", "Completed"),
    ]
    assert final.output_path is not None
    outputs = _outputs(final.output_path)
    assert "3 ['EU', 'EU', 'EU']\n" in outputs
    assert not any("already loaded" in text for text in outputs), outputs


def test_magics_work_without_a_load_ext_cell(
    client: EmbeddedClient, write_notebook: Callable[..., Path]
) -> None:
    """A notebook written for an auto-loaded extension runs in batch without ``%load_ext``."""
    cells = [c for c in FLOW_NOTEBOOK if not c.startswith("%load_ext")]
    assert len(cells) == len(FLOW_NOTEBOOK) - 1
    run, runner, infra = _run(client, write_notebook("autoload.ipynb", cells), {"n": 2})
    assert runner.wait(infra, timeout=240) == 0
    final = client.read_flow_run(run.id)
    assert final.state is not None and final.state.type is StateType.COMPLETED, final.state
    tasks = client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))
    assert [t.name for t in tasks] == ["extract", "report"]


def test_failing_task_cell_fails_the_run(
    client: EmbeddedClient, write_notebook: Callable[..., Path]
) -> None:
    run, runner, infra = _run(client, write_notebook("flow.ipynb", FLOW_NOTEBOOK), {"n": 7})
    assert runner.wait(infra, timeout=240) == 1
    state = client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.FAILED
    assert state.data["cell_index"] == 4  # after the injected-parameters cell
    tasks = {t.name: t for t in client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))}
    report = tasks["report"].state
    assert report is not None and report.type is StateType.FAILED


def test_same_outcome_as_papermill(
    client: EmbeddedClient, write_notebook: Callable[..., Path], tmp_path: Path
) -> None:
    import papermill

    path = write_notebook(
        "same.ipynb",
        ["x = 1\nword = 'a'", "print(word * x)", "import sys; print(sys.version_info[0])"],
        parameters=0,
    )
    theirs = tmp_path / "theirs.ipynb"
    papermill.execute_notebook(str(path), str(theirs), {"x": 3, "word": "b"}, progress_bar=False)
    run, runner, infra = _run(client, path, {"x": 3, "word": "b"})
    assert runner.wait(infra, timeout=240) == 0
    ours = client.read_flow_run(run.id).output_path
    assert ours is not None
    assert _outputs(ours) == _outputs(str(theirs)) == ["bbb\n", "3\n"]


def test_prestarted_executor_runs_a_flow_notebook_once(
    client: EmbeddedClient, write_notebook: Callable[..., Path]
) -> None:
    """A pooled executor gets the run's environment and directory before the first cell."""
    path = write_notebook("pooled.ipynb", [*FLOW_NOTEBOOK, "import os; print(os.getcwd())"])
    runner = SubprocessRunner(client=client, prestart=1, output=lambda line: None)
    try:
        runs = []
        for n in (1, 2):  # the second run gets the replacement, never the first kernel
            run = create_notebook_run(client, prepare_notebook(path), {"n": n})
            runs.append((run, launch(client, run, runner)))
        for run, infra in runs:
            code = runner.wait(infra, timeout=240)
            final = client.read_flow_run(run.id)
            assert code == 0, (code, final.state, client.read_logs(run.id).logs[-5:])
            assert final.state is not None and final.state.type is StateType.COMPLETED
            tasks = client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))
            assert [t.name for t in tasks] == ["extract", "report"]
            assert final.output_path is not None
            assert f"{path.parent}\n" in _outputs(final.output_path)
        assert runs[0][1] != runs[1][1]
    finally:
        runner.close()


def test_deployment_snapshot_is_executed_without_the_file(
    client: EmbeddedClient, write_notebook: Callable[..., Path]
) -> None:
    path = write_notebook("snap.ipynb", ["n = 1", "print('snapshot', n)"], parameters=0)
    snapshot = json.loads(path.read_text())
    path.unlink()  # the runner needs no shared filesystem
    schema = {"type": "object", "properties": {"n": {"type": "integer", "default": 1}}}
    flow = client.create_flow(Flow(name="snap", parameters_schema=schema))
    deployment = client.create_deployment(
        DeploymentCreate(flow_id=flow.id, name="d", notebook=snapshot, parameters={"n": 4})
    )
    run = client.create_flow_run(
        FlowRunCreate(
            flow_id=flow.id,
            deployment_id=deployment.id,
            parameters={"n": 5},
            state=Pending(),
            mode="batch",
        )
    )
    runner = SubprocessRunner(client=client)
    infra = launch(client, run, runner)
    assert runner.wait(infra, timeout=240) == 0
    final = client.read_flow_run(run.id)
    assert final.state is not None and final.state.type is StateType.COMPLETED, final.state
    assert final.output_path is not None
    assert "snapshot 5\n" in _outputs(final.output_path)


def test_nbflow_run_command(
    client: EmbeddedClient,
    write_notebook: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from nbflow.cli import main

    good = write_notebook("good.ipynb", ["n = 1", "print(n * 2)"], parameters=0)
    assert main(["run", str(good), "-p", "n=21"]) == 0
    out = capsys.readouterr().out
    assert "state:  Completed" in out and "output: " in out and "run id: " in out
    output = out.split("output: ")[1].split()[0]
    assert "42\n" in _outputs(output)
    bad = write_notebook("bad.ipynb", ["1 / 0"])
    assert main(["run", str(bad)]) == 1
    assert "state:  Failed" in capsys.readouterr().out
    assert main(["run", str(good), "-p", "n=x"]) == 2
    assert "expected integer" in capsys.readouterr().err
    assert main(["run", str(good), "--runner", "nope"]) == 2
    assert "Available runners" in capsys.readouterr().err
    # The record shows the defaults the notebook ran with, marked as such.
    two = write_notebook("two.ipynb", ["n = 1\nlabel = 'x'", "print(label * n)"], parameters=0)
    assert main(["run", str(two), "-p", "n=3", "-q"]) == 0
    run_id = capsys.readouterr().out.split("run id: ")[1].split()[0]
    assert main(["runs", "show", run_id]) == 0
    shown = capsys.readouterr().out
    assert "n = 3\n" in shown and 'label = "x"  (default)' in shown, shown


def test_wait_is_honoured_until_the_scheduled_time(
    client: EmbeddedClient, write_notebook: Callable[..., Path]
) -> None:
    from datetime import timedelta

    from nbflow.states import Scheduled, now

    path = write_notebook("later.ipynb", ["print('ran')"])
    flow = client.create_flow(Flow(name="later"))
    at = now() + timedelta(seconds=2)
    run = client.create_flow_run(
        FlowRunCreate(flow_id=flow.id, state=Scheduled(at), notebook_path=str(path), mode="batch")
    )
    client.set_flow_run_state(run.id, Pending())  # claimed early: Running only from Pending
    runner = SubprocessRunner(client=client)
    assert runner.wait(launch(client, run, runner), timeout=240) == 0
    states = client.read_flow_run_states(run.id)
    assert [s.name for s in states] == ["Scheduled", "Pending", "Running", "Completed"]
    assert states[2].timestamp >= at  # the gate answered WAIT until then
