"""Cancel and crash reach every process of a run: the kernel and what the notebook started.

The notebook starts two children that ignore SIGINT and SIGTERM, one in the kernel's
process group and one in a session of its own, and writes their pids and the kernel's.
After a cancel, or a ``kill -9`` of ``nbflow execute``, none of them may be alive, and no
kernel connection file or socket of the executor may be left in the runtime directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from jupyter_core.paths import jupyter_runtime_dir

from nbflow.cli.notebook_run import create_notebook_run, launch, prepare_notebook
from nbflow.client.embedded import EmbeddedClient
from nbflow.execution import kernels
from nbflow.runners import processes
from nbflow.runners.processes import KERNEL_FILE_PREFIX
from nbflow.runners.subprocess import SubprocessRunner
from nbflow.schemas import FlowRun
from nbflow.states import StateType

STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"
)
NOTEBOOK = [
    "import os, pathlib, subprocess, sys, time",
    f"same_group = subprocess.Popen([sys.executable, '-c', {STUBBORN!r}])\n"
    f"own_session = subprocess.Popen([sys.executable, '-c', {STUBBORN!r}], "
    "start_new_session=True)",
    "pathlib.Path('pids.tmp').write_text(f'{os.getpid()} {same_group.pid} {own_session.pid}')\n"
    "pathlib.Path('pids.tmp').rename('pids')",
    "time.sleep(600)",
]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _start(
    client: EmbeddedClient, write_notebook: Callable[..., Path], tmp_path: Path
) -> tuple[FlowRun, SubprocessRunner, str, list[int]]:
    runner = SubprocessRunner(client=client)
    run = create_notebook_run(
        client, prepare_notebook(write_notebook("stubborn.ipynb", NOTEBOOK)), {}
    )
    infra = launch(client, run, runner)
    pids_file = tmp_path / "pids"
    deadline = time.monotonic() + 240
    while not pids_file.exists():
        assert runner.wait(infra, 0) is None, client.read_flow_run(run.id).state
        assert time.monotonic() < deadline, "the notebook never started its children"
        time.sleep(0.1)
    pids = [int(p) for p in pids_file.read_text().split()]
    assert all(_alive(p) for p in pids)
    return run, runner, infra, pids


def _kernel_files(infra: str) -> list[str]:
    pid = infra.rpartition(":")[2]
    return sorted(p.name for p in Path(jupyter_runtime_dir()).glob(f"{KERNEL_FILE_PREFIX}{pid}-*"))


@pytest.mark.slow
def test_cancel_stops_the_kernel_and_children_that_ignore_sigterm(
    client: EmbeddedClient, write_notebook: Callable[..., Path], tmp_path: Path
) -> None:
    run, runner, infra, pids = _start(client, write_notebook, tmp_path)
    runner.cancel(client.read_flow_run(run.id), grace_seconds=20)
    state = client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.CANCELLED, state
    # The executor stopped them itself, before it proposed Cancelled.
    assert [p for p in pids if _alive(p)] == []
    assert runner.wait(infra, 30) == 0
    assert _kernel_files(infra) == []


@pytest.mark.slow
def test_kill_9_of_the_executor_is_crashed_and_leaves_nothing_running(
    client: EmbeddedClient, write_notebook: Callable[..., Path], tmp_path: Path
) -> None:
    run, runner, infra, pids = _start(client, write_notebook, tmp_path)
    assert _kernel_files(infra)  # a live kernel has its connection file and sockets
    os.kill(int(infra.rpartition(":")[2]), signal.SIGKILL)
    assert runner.wait(infra, 60) == -signal.SIGKILL
    state = client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.CRASHED, state
    assert [p for p in pids if _alive(p)] == []
    assert _kernel_files(infra) == []


PARENT = f"""
import subprocess, sys, time
from nbflow.execution.kernels import parent_death_signal
child = subprocess.Popen([sys.executable, '-c', {STUBBORN!r}], preexec_fn=parent_death_signal)
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_child_with_the_parent_death_signal_dies_with_its_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_run_processes_never_include_the_caller_or_its_group() -> None:
    same_group = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        found = processes.run_processes([same_group.pid])
        assert same_group.pid in found
        assert os.getpid() not in found and os.getppid() not in found
        # Its group is this test's: only the process itself, not the group, is the run's.
        assert found == {same_group.pid}
    finally:
        same_group.kill()
        same_group.wait()


def test_the_kernel_file_prefix_is_the_same_on_both_sides() -> None:
    assert kernels.KERNEL_FILE_PREFIX == processes.KERNEL_FILE_PREFIX
