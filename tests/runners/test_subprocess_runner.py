"""The runner contract and the subprocess runner, with real processes and a real store."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbflow.client.embedded import EmbeddedClient
from nbflow.exceptions import ValidationError
from nbflow.orchestration.job_variables import merge_job_variables
from nbflow.runners import available_runners, get_runner
from nbflow.runners.subprocess import SubprocessJobVariables, SubprocessRunner
from nbflow.schemas import Flow, FlowRun, FlowRunCreate
from nbflow.settings import Settings, reload_settings
from nbflow.states import Pending, Running, StateType


class ScriptRunner(SubprocessRunner):
    """The subprocess runner launching a small script instead of ``nbflow execute``."""

    name = "script"

    def __init__(self, script: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.script = script

    def command(self, flow_run: FlowRun, python: str | None = None) -> list[str]:
        return [python or sys.executable, "-c", self.script]


class Lines:
    """Collects output lines; ``wait_for`` blocks until a line appears."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, line: str) -> None:
        with self._cond:
            self.lines.append(line)
            self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: text in self.lines, timeout), self.lines


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NBFLOW_API_URL", raising=False)
    monkeypatch.delenv("NBFLOW_DATABASE_URL", raising=False)
    yield reload_settings()
    monkeypatch.undo()
    reload_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[EmbeddedClient]:
    settings.home.mkdir(parents=True, exist_ok=True)
    c = EmbeddedClient.from_url(settings.database_url)
    yield c
    c.close()


@pytest.fixture
def running_run(client: EmbeddedClient) -> FlowRun:
    flow = client.create_flow(Flow(name="runner-test"))
    run = client.create_flow_run(FlowRunCreate(flow_id=flow.id, job_variables={"env": {"B": "2"}}))
    client.set_flow_run_state(run.id, Pending())  # claimed: Running only from Pending
    client.set_flow_run_state(run.id, Running())
    return client.read_flow_run(run.id)


def test_registry_lists_and_loads_runners() -> None:
    assert "subprocess" in available_runners()
    assert get_runner("subprocess") is SubprocessRunner
    with pytest.raises(ValidationError, match=r"runner='nope'.*Available runners: .*subprocess"):
        get_runner("nope")


def test_job_configuration_layers_and_env_merge(settings: Settings) -> None:
    assert merge_job_variables(
        {"env": {"A": "1", "B": "1"}, "python": "x"}, None, {"env": {"B": 2}, "python": "y"}
    ) == {"env": {"A": "1", "B": "2"}, "python": "y"}
    run = FlowRun(name="r", flow_id=Flow(name="f").id, job_variables={"env": {"B": "run"}})
    runner = SubprocessRunner(settings=settings)
    # The runner validates the final (already merged) configuration and never merges again.
    config = runner.job_configuration(run, {"env": {"A": "dep", "B": "dep"}, "working_dir": "/tmp"})
    assert isinstance(config, SubprocessJobVariables)
    assert config.env == {"A": "dep", "B": "dep"}
    assert (config.working_dir, config.stream_output, config.python) == ("/tmp", True, None)
    own = runner.job_configuration(run)  # no configuration given: the run's own variables
    assert isinstance(own, SubprocessJobVariables) and own.env == {"B": "run"}
    with pytest.raises(ValidationError, match=r"job_variables.imag.*accepts: conda_env, env"):
        SubprocessRunner(settings=settings).job_configuration(run, {"imag": "x"})


def test_process_gets_the_run_environment_and_exit_zero_changes_nothing(
    client: EmbeddedClient, running_run: FlowRun, settings: Settings
) -> None:
    lines = Lines()
    script = (
        "import os\n"
        "for k in ('NBFLOW__FLOW_RUN_ID', 'NBFLOW_HOME', 'NBFLOW_DATABASE_URL', 'A', 'B'):\n"
        "    print(k + '=' + os.environ.get(k, '-'))\n"
    )
    runner = ScriptRunner(script, client=client, output=lines, settings=settings)
    # The caller merges (the dispatcher's claim does): deployment-like layer < the run's own.
    config = merge_job_variables({"env": {"A": "1", "B": "1"}}, running_run.job_variables)
    infra = runner.submit(running_run, config)
    assert infra.endswith(":" + infra.rpartition(":")[2]) and infra.rpartition(":")[2].isdigit()
    assert runner.wait(infra, timeout=120) == 0
    assert lines.lines == [
        f"NBFLOW__FLOW_RUN_ID={running_run.id}",
        f"NBFLOW_HOME={settings.home}",
        f"NBFLOW_DATABASE_URL={settings.database_url}",
        "A=1",
        "B=2",
    ]
    state = client.read_flow_run(running_run.id).state
    assert state is not None and state.type is StateType.RUNNING


def test_non_zero_exit_of_an_unfinished_run_is_crashed(
    client: EmbeddedClient, running_run: FlowRun, settings: Settings
) -> None:
    runner = ScriptRunner("import sys; sys.exit(3)", client=client, settings=settings)
    infra = runner.submit(running_run, {"stream_output": False})
    assert runner.wait(infra, timeout=120) == 3
    state = client.read_flow_run(running_run.id).state
    assert state is not None and state.type is StateType.CRASHED
    assert state.message is not None and "exited with code 3" in state.message


def test_kill_terminates_politely_within_grace(
    client: EmbeddedClient, running_run: FlowRun, settings: Settings
) -> None:
    lines = Lines()
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('terminated', flush=True), sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    runner = ScriptRunner(script, client=client, output=lines, settings=settings)
    infra = runner.submit(running_run)
    lines.wait_for("ready")
    runner.kill(infra, grace_seconds=120)
    assert runner.wait(infra) == 0
    assert "terminated" in lines.lines


def test_kill_escalates_to_sigkill_of_the_whole_group(
    client: EmbeddedClient, running_run: FlowRun, settings: Settings
) -> None:
    lines = Lines()
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
        "print('child', child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    runner = ScriptRunner(script, client=client, output=lines, settings=settings)
    infra = runner.submit(running_run)
    with lines._cond:
        assert lines._cond.wait_for(lambda: any(x.startswith("child ") for x in lines.lines), 60)
    child_pid = int(next(x for x in lines.lines if x.startswith("child ")).split()[1])
    runner.kill(infra, grace_seconds=0.5)
    assert runner.wait(infra) == -signal.SIGKILL
    _reap_or_gone(child_pid)
    state = client.read_flow_run(running_run.id).state
    assert state is not None and state.type is StateType.CRASHED
    assert state.message is not None and "killed by signal 9" in state.message


def _reap_or_gone(pid: int) -> None:
    """Assert the grandchild died (it was reparented, so poll for it to vanish)."""
    import time

    for _ in range(600):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split()[2] == "Z":  # a zombie awaiting its new parent's reaping
                return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} survived SIGKILL of its group")


def test_cancel_kills_and_ends_cancelled(
    client: EmbeddedClient, running_run: FlowRun, settings: Settings
) -> None:
    lines = Lines()
    script = "import time; print('ready', flush=True); time.sleep(600)"
    runner = ScriptRunner(script, client=client, output=lines, settings=settings)
    infra = runner.submit(running_run)
    lines.wait_for("ready")
    run = client.update_flow_run(running_run.id, infrastructure_id=infra)
    runner.cancel(run, grace_seconds=30)
    assert runner.wait(infra) == -signal.SIGTERM
    state = client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.CANCELLED
    names = [s.name for s in client.read_flow_run_states(run.id)]
    assert names[-2:] == ["Cancelling", "Cancelled"]


def test_kill_from_another_runner_instance(
    client: EmbeddedClient, running_run: FlowRun, settings: Settings
) -> None:
    lines = Lines()
    runner = ScriptRunner(
        "import time; print('ready', flush=True); time.sleep(600)", output=lines, settings=settings
    )
    infra = runner.submit(running_run)
    lines.wait_for("ready")
    SubprocessRunner(settings=settings).kill(infra, grace_seconds=30)
    assert runner.wait(infra) == -signal.SIGTERM
    SubprocessRunner(settings=settings).kill(infra, grace_seconds=1)  # already gone: no error


def test_interpreter_job_variables(tmp_path: Path, settings: Settings) -> None:
    runner = SubprocessRunner(settings=settings)
    run = FlowRun(name="r", flow_id=Flow(name="f").id)
    venv = Path(sys.executable).parent.parent
    assert runner.interpreter(runner.job_configuration(run, {"virtualenv": str(venv)})) == [
        str(venv / "bin" / "python")
    ]
    with pytest.raises(ValidationError, match=r"job_variables.virtualenv.*has no interpreter"):
        runner.interpreter(runner.job_configuration(run, {"virtualenv": str(tmp_path)}))
    with pytest.raises(ValidationError, match="at most one of python, virtualenv and conda_env"):
        runner.interpreter(
            runner.job_configuration(run, {"virtualenv": str(venv), "python": "python3"})
        )
    with pytest.raises(ValidationError, match=r"job_variables\.python"):
        runner.interpreter(runner.job_configuration(run, {"python": "no-such-python-xyz"}))


def test_unknown_infrastructure_id(settings: Settings) -> None:
    runner = SubprocessRunner(settings=settings)
    with pytest.raises(ValidationError, match="runs on host 'elsewhere'"):
        runner.kill("elsewhere:123")
    with pytest.raises(ValidationError, match="was not started by this runner"):
        runner.wait("x:1")
