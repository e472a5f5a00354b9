"""The server's warm pool: pre-started executors take runs, and no run can tell.

A real in-process server with its services on dispatches real ``nbflow execute`` runs
through the subprocess runner.  A probe notebook prints its kernel's environment, working
directory and ``sys.path`` as JSON; the tests compare what runs through the pool see with
each other and with a cold start.  Waits poll with generous deadlines; nothing asserts
on durations.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbflow.runners.processes import descendants
from nbflow.runners.subprocess import SubprocessRunner
from nbflow.settings import reload_settings
from nbflow_server import NbflowApp
from tests.live_server import LiveServer
from tests.server.helpers import Api, make_notebook
from tests.server.live_services import eventually, services_config

pytestmark = pytest.mark.slow

#: Prints what the kernel sees; the first cell is the parameters cell.
PROBE = [
    "import json, os, sys",
    "print('PROBE' + json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), "
    "'path': sys.path, 'leak': 'leak' in globals(), 'exe': sys.executable}))",
]
#: Run 1 also leaves a variable, an environment variable and a directory behind.
LEAVE_BEHIND = ["leak = 1\nos.environ['NBFLOW_TEST_KERNEL_SET'] = '1'\nos.chdir('/')"]
#: Differ between any two runs by design (the run's id and token, the executor's marker).
PER_RUN = {"NBFLOW__FLOW_RUN_ID", "NBFLOW_API_TOKEN", "NBFLOW__EXECUTOR_ID", "JPY_PARENT_PID"}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """One NBFLOW_HOME for the server and the runs it starts (they inherit it)."""
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / "home"))
    for name in ("NBFLOW_API_URL", "NBFLOW_API_TOKEN", "NBFLOW_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    reload_settings()
    yield tmp_path / "home"
    monkeypatch.undo()
    reload_settings()


@pytest.fixture
def pool() -> dict[str, Any]:
    return {"warm_executors": 1}  # the server's default (the test helpers turn it off)


@pytest.fixture
def jp_server_config(tmp_path: Path, home: Path, pool: dict[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "heartbeat_timeout": 300.0,
        "runner_defaults": {"subprocess": {"stream_output": False}},
        "warm_executor_min_memory_mb": 0.0,
        **pool,
    }
    return services_config(f"sqlite:///{tmp_path / 'nbflow.db'}", tmp_path, **settings)


async def _start(jp_serverapp: Any, nbflow_app: NbflowApp) -> SubprocessRunner:
    await jp_serverapp.extension_manager.start_all_extensions()
    runner = nbflow_app.runners.get("subprocess")
    assert isinstance(runner, SubprocessRunner)
    return runner


async def _ready(runner: SubprocessRunner) -> list[int]:
    """Wait until a standby waits for a run; return the standbys' pids."""

    async def ready() -> list[int]:
        return [pid for pid in runner.standby_pids if _imports_done(pid)]

    return await eventually(ready, what="an executor started ahead")  # type: ignore[no-any-return]


def _imports_done(pid: int) -> bool:
    """Whether the standby started its kernel (it has a child process)."""
    return bool(descendants(pid))


def _standby_processes() -> set[int]:
    """The ``nbflow execute --standby`` processes below this test process."""
    found = set()
    for pid in descendants(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--standby" in cmdline:
            found.add(pid)
    return found


async def _deploy(api: Api, cells: list[str], name: str, **fields: Any) -> dict[str, Any]:
    _, flow = await api("POST", "flows", body={"name": f"flow-{name}"})
    status, dep = await api(
        "POST",
        "deployments",
        body={"flow_id": flow["id"], "name": name, "notebook": make_notebook(cells), **fields},
    )
    assert status == 201, dep
    return dep  # type: ignore[no-any-return]


async def _run(api: Api, dep: dict[str, Any], **body: Any) -> dict[str, Any]:
    """Run the deployment now and wait for its end; it must complete."""
    status, run = await api("POST", "deployments", dep["id"], "runs", body=body)
    assert status == 201, run

    async def ended() -> Any:
        _, current = await api("GET", "flow_runs", run["id"])
        terminal = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
        return current if current["state"]["type"] in terminal else None

    final = await eventually(ended, what=f"run {run['id']} to end", deadline=240)
    assert final["state"]["type"] == "COMPLETED", final["state"]
    return final  # type: ignore[no-any-return]


async def _probe(api: Api, run: dict[str, Any]) -> dict[str, Any]:
    """What the run's kernel printed from the probe cell."""
    status, output = await api("GET", "flow_runs", run["id"], "output")
    assert status == 200, output
    for cell in output["cells"]:
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", ""))
            if text.startswith("PROBE"):
                return json.loads(text[len("PROBE") :])  # type: ignore[no-any-return]
    raise AssertionError(f"run {run['id']} printed no probe")


async def test_a_warm_run_never_sees_the_previous_run(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp, tmp_path: Path
) -> None:
    runner = await _start(jp_serverapp, nbflow_app)
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    one = await _deploy(
        api,
        PROBE + LEAVE_BEHIND,
        "one",
        job_variables={"env": {"NBFLOW_TEST_RUN_ONE": "yes"}, "working_dir": str(first_dir)},
    )
    two = await _deploy(api, PROBE, "two", job_variables={"working_dir": str(second_dir)})

    await _ready(runner)
    first = await _run(api, one)
    await _ready(runner)
    second = await _run(api, two)

    assert runner.started_warm(first["infrastructure_id"])
    assert runner.started_warm(second["infrastructure_id"])
    seen_first, seen_second = await _probe(api, first), await _probe(api, second)
    assert seen_first["env"]["NBFLOW_TEST_RUN_ONE"] == "yes"
    assert seen_first["cwd"] == str(first_dir)
    assert not seen_second["leak"], "run 2 sees a variable run 1 set"
    assert "NBFLOW_TEST_RUN_ONE" not in seen_second["env"], "run 2 sees run 1's job env"
    assert "NBFLOW_TEST_KERNEL_SET" not in seen_second["env"]
    assert seen_second["cwd"] == str(second_dir)
    # Each run reports as itself, with its own token (given in its job line).
    assert seen_first["env"]["NBFLOW__FLOW_RUN_ID"] == first["id"]
    assert seen_second["env"]["NBFLOW__FLOW_RUN_ID"] == second["id"]
    tokens = {seen_first["env"]["NBFLOW_API_TOKEN"], seen_second["env"]["NBFLOW_API_TOKEN"]}
    assert len(tokens) == 2
    assert seen_second["env"]["NBFLOW_API_URL"] == nbflow_app.api_url()


async def test_a_warm_kernel_sees_what_a_cold_start_gives(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp, tmp_path: Path
) -> None:
    runner = await _start(jp_serverapp, nbflow_app)
    root = Path(jp_serverapp.root_dir)
    (root / "sub").mkdir()
    dep = await _deploy(
        api,
        PROBE,
        "same",
        notebook_path="sub/probe.ipynb",
        job_variables={"env": {"NBFLOW_TEST_JOB": "job value"}},
    )
    await _ready(runner)
    warm = await _run(api, dep)
    assert runner.started_warm(warm["infrastructure_id"])
    runner.close()  # no executor ahead any more: the next run starts cold
    cold = await _run(api, dep)
    assert not runner.started_warm(cold["infrastructure_id"])

    seen_warm, seen_cold = await _probe(api, warm), await _probe(api, cold)
    # The notebook's folder, as in JupyterLab and for a cold `nbflow execute`.
    assert seen_cold["cwd"] == str((root / "sub").resolve())
    assert seen_warm["cwd"] == seen_cold["cwd"]
    assert seen_warm["path"] == seen_cold["path"]
    assert seen_warm["exe"] == seen_cold["exe"]
    warm_env = {k: v for k, v in seen_warm["env"].items() if k not in PER_RUN}
    cold_env = {k: v for k, v in seen_cold["env"].items() if k not in PER_RUN}
    assert warm_env == cold_env
    assert warm_env["NBFLOW_TEST_JOB"] == "job value"
    assert not _standby_processes()


async def test_another_kernel_gets_its_own_kernel(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp, tmp_path: Path
) -> None:
    spec_dir = Path(os.environ["JUPYTER_DATA_DIR"]) / "kernels" / "nbflow-other"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Other",
        "language": "python",
        "env": {"NBFLOW_TEST_KERNELSPEC": "other"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    runner = await _start(jp_serverapp, nbflow_app)
    work = tmp_path / "work"
    work.mkdir()
    dep = await _deploy(
        api,
        PROBE,
        "other",
        kernel_name="nbflow-other",
        job_variables={"env": {"NBFLOW_TEST_JOB": "x"}, "working_dir": str(work)},
    )
    await _ready(runner)
    run = await _run(api, dep)
    seen = await _probe(api, run)
    # The kernel the deployment names, started for the run: its spec's env, the run's
    # env and directory (the python3 kernel started ahead was discarded unused).
    assert seen["env"]["NBFLOW_TEST_KERNELSPEC"] == "other"
    assert seen["env"]["NBFLOW_TEST_JOB"] == "x"
    assert seen["env"]["NBFLOW__FLOW_RUN_ID"] == run["id"]
    assert seen["cwd"] == str(work)


async def test_interpreter_start_up_variables_start_cold(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp, tmp_path: Path
) -> None:
    runner = await _start(jp_serverapp, nbflow_app)
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "nbflow_test_helper.py").write_text("ANSWER = 42\n")
    dep = await _deploy(
        api,
        ["import nbflow_test_helper", "assert nbflow_test_helper.ANSWER == 42"],
        "pythonpath",
        job_variables={"env": {"PYTHONPATH": str(lib)}},
    )
    await _ready(runner)
    run = await _run(api, dep)
    assert not runner.started_warm(run["infrastructure_id"])
    # The executor ahead is still there for the next run that can use it.
    assert await _ready(runner)


@pytest.mark.parametrize("pool", [{"warm_executors": 0}])
async def test_pool_off_starts_every_run_cold(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    runner = await _start(jp_serverapp, nbflow_app)
    dep = await _deploy(api, PROBE, "off")
    run = await _run(api, dep)
    assert not runner.started_warm(run["infrastructure_id"])
    assert runner.standby_pids == []
    assert not _standby_processes()


@pytest.mark.parametrize("pool", [{"warm_executors": 1, "warm_executor_min_memory_mb": 1e12}])
async def test_low_memory_starts_no_executor_ahead(
    api: Api,
    jp_serverapp: Any,
    nbflow_app: NbflowApp,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "nbflow.runners.standby")
    runner = await _start(jp_serverapp, nbflow_app)
    dep = await _deploy(api, PROBE, "low-memory")
    run = await _run(api, dep)
    assert not runner.started_warm(run["infrastructure_id"])
    assert not _standby_processes()
    assert any("below the pool's minimum" in r.getMessage() for r in caplog.records)


async def test_a_standby_killed_while_idle_is_replaced(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    runner = await _start(jp_serverapp, nbflow_app)
    (killed,) = await _ready(runner)
    its_processes = {killed, *descendants(killed)}
    os.kill(killed, signal.SIGKILL)

    async def replaced() -> list[int]:
        return [p for p in await _ready(runner) if p != killed]

    await eventually(replaced, what="a replacement executor")

    async def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in its_processes - {killed})

    await eventually(gone, what="the killed executor's kernel to be gone")
    dep = await _deploy(api, PROBE, "after-kill")
    run = await _run(api, dep)
    assert runner.started_warm(run["infrastructure_id"])


def test_a_stopped_server_leaves_no_executor_behind(tmp_path: Path) -> None:
    with LiveServer(tmp_path, services=True) as server:
        assert server.proc is not None
        deadline = time.monotonic() + 120
        while True:
            below = descendants(server.proc.pid)
            standbys = {p for p in below if b"--standby" in _cmdline(p)}
            if standbys and all(descendants(p) for p in standbys):
                break  # an executor ahead, with its kernel
            assert time.monotonic() < deadline, "the server started no executor ahead"
            time.sleep(0.2)
    assert server.proc.returncode is not None
    left = set(below)
    deadline = time.monotonic() + 60
    while left and time.monotonic() < deadline:
        left = {p for p in left if _alive(p)}
        time.sleep(0.2)
    assert not left, [_cmdline(p) for p in left]
    runtime = tmp_path / "runtime"
    assert not list(runtime.glob("nbflow-kernel-*")), "kernel files left behind"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited and waiting for its parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
