"""The server owns the interactive runs of its kernels: cancel interrupts, death crashes.

Real jupyter_server (pytest-jupyter), real kernels started through ``POST /api/kernels``,
real cells over a kernel client; the services run (``services/kernels.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from nbflow.settings import reload_settings
from nbflow_server import NbflowApp
from tests.server.helpers import Api
from tests.server.live_services import eventually, kernel_settled, services_config

pytestmark = pytest.mark.slow

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """One NBFLOW_HOME; the kernels learn the server's URL from the server, not the test."""
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / "home"))
    for name in ("NBFLOW_API_URL", "NBFLOW_API_TOKEN", "NBFLOW_DATABASE_URL", "NBFLOW__KERNEL_ID"):
        monkeypatch.delenv(name, raising=False)
    reload_settings()
    yield tmp_path / "home"
    monkeypatch.undo()
    reload_settings()


@pytest.fixture
def grace() -> float:
    return 10.0


@pytest.fixture
def jp_server_config(tmp_path: Path, home: Path, grace: float) -> dict[str, Any]:
    return services_config(
        f"sqlite:///{tmp_path / 'nbflow.db'}",
        tmp_path,
        heartbeat_timeout=300.0,
        cancel_timeout=120.0,
        kernel_interrupt_grace=grace,
    )


class Kernel:
    """A kernel started through the server's kernels API, with a client on it."""

    def __init__(self, jp_fetch: Any, jp_serverapp: Any, kernel_id: str) -> None:
        self.fetch, self.serverapp, self.id = jp_fetch, jp_serverapp, kernel_id
        self.client = jp_serverapp.kernel_manager.get_kernel(kernel_id).client()

    async def run(self, code: str) -> dict[str, Any]:
        """Execute ``code`` and wait for its reply."""
        reply: dict[str, Any] = await self.client.execute_interactive(code, timeout=120)
        return reply

    async def execution_state(self) -> str:
        response = await self.fetch("api", "kernels", self.id)
        return str(json.loads(response.body)["execution_state"])


@contextlib.asynccontextmanager
async def started_kernel(jp_fetch: Any, jp_serverapp: Any) -> AsyncIterator[Kernel]:
    """Start the services and a kernel of the server; shut it down afterwards."""
    await jp_serverapp.extension_manager.start_all_extensions()
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    k = Kernel(jp_fetch, jp_serverapp, json.loads(response.body)["id"])
    k.client.start_channels()
    try:
        await k.client.wait_for_ready(timeout=120)
        yield k
    finally:
        k.client.stop_channels()
        if k.id in jp_serverapp.kernel_manager:
            # A killed kernel is being restarted by its restarter: shutting it down before
            # that finishes trips jupyter_client (its `ready` future is not done yet).
            await kernel_settled(jp_serverapp, k.id)
            await jp_serverapp.kernel_manager.shutdown_kernel(k.id, now=True)


async def _run_of(api: Api, flow: str) -> dict[str, Any]:
    """Wait for the Running interactive run of ``flow``."""

    async def running() -> Any:
        _, page = await api("GET", "flow_runs", params={"flow_names": flow})
        items = [r for r in page["items"] if r["state"]["type"] == "RUNNING"]
        return items[0] if items else None

    run: dict[str, Any] = await eventually(running, what=f"the Running run of {flow}")
    return run


async def _task_running(api: Api, run_id: str) -> dict[str, Any]:
    async def running() -> Any:
        _, page = await api("GET", "task_runs", params={"flow_run_ids": run_id})
        items = [t for t in page["items"] if t["state"] and t["state"]["type"] == "RUNNING"]
        return items[0] if items else None

    task: dict[str, Any] = await eventually(running, what="the running task run")
    return task


async def _final(api: Api, what: str, *path: str) -> dict[str, Any]:
    async def ended() -> Any:
        _, body = await api("GET", *path)
        return body if body["state"] and body["state"]["type"] in TERMINAL else None

    result: dict[str, Any] = await eventually(ended, what=what)
    return result


async def _start_long_task(api: Api, kernel: Kernel, flow: str, body: str) -> tuple[Any, Any]:
    """Run ``%%flow flow`` then send a ``%%task`` cell with ``body`` (not waited for)."""
    reply = await kernel.run(f"%%flow {flow}\nx = 1")
    assert reply["content"]["status"] == "ok", reply["content"]
    msg_id = kernel.client.execute(f"%%task slow\n{body}")
    run = await _run_of(api, flow)
    task = await _task_running(api, run["id"])
    return run, (msg_id, task)


async def _reply(kernel: Kernel, msg_id: str) -> dict[str, Any]:
    while True:
        msg: dict[str, Any] = await kernel.client.get_shell_msg(timeout=120)
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


async def test_the_run_records_its_kernel_and_cancel_interrupts_it(
    api: Api, jp_fetch: Any, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    async with started_kernel(jp_fetch, jp_serverapp) as kernel:
        run, (msg_id, task) = await _start_long_task(
            api, kernel, "cancel_me", "import time\ntime.sleep(60)"
        )
        assert run["infrastructure_id"] == f"kernel:{kernel.id}"

        status, _ = await api("POST", "flow_runs", run["id"], "cancel", body={})
        assert status == 200

        final = await _final(api, "the run to end", "flow_runs", run["id"])
        assert final["state"]["type"] == "CANCELLED", final["state"]
        _, tasks = await api("GET", "task_runs", params={"flow_run_ids": run["id"]})
        ended_task = next(t for t in tasks["items"] if t["id"] == task["id"])
        assert ended_task["state"]["type"] == "CANCELLED", ended_task["state"]
        reply = await _reply(kernel, msg_id)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"

        async def idle() -> bool:
            return await kernel.execution_state() == "idle"

        await eventually(idle, what="the kernel to be idle")


async def test_cancel_between_cells_ends_the_run_at_once(
    api: Api, jp_fetch: Any, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    async with started_kernel(jp_fetch, jp_serverapp) as kernel:
        reply = await kernel.run("%%flow between_cells\nx = 1")
        assert reply["content"]["status"] == "ok", reply["content"]
        run = await _run_of(api, "between_cells")

        status, _ = await api("POST", "flow_runs", run["id"], "cancel", body={})
        assert status == 200

        final = await _final(api, "the run to end", "flow_runs", run["id"])
        # The next task cell notices the cancel and runs in a new run of the flow.
        reply = await kernel.run("%%task after_cancel\ny = x + 1")
        assert reply["content"]["status"] == "ok", reply["content"]
        _, old_tasks = await api("GET", "task_runs", params={"flow_run_ids": run["id"]})
        _, page = await api("GET", "flow_runs", params={"flow_names": "between_cells"})
    assert final["state"]["type"] == "CANCELLED", final["state"]
    assert final["state"]["data"]["kernel_stopped"] is True
    assert old_tasks["items"] == []
    runs = {r["id"]: r for r in page["items"]}
    assert len(runs) == 2 and runs[run["id"]]["state"]["type"] == "CANCELLED"


@pytest.mark.parametrize("grace", [1.0])
async def test_a_kernel_ignoring_the_interrupt_is_cancelled_anyway(
    api: Api, jp_fetch: Any, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    events: list[dict[str, Any]] = []
    unsubscribe = nbflow_app.event_bus.subscribe(events.append)
    async with started_kernel(jp_fetch, jp_serverapp) as kernel:
        try:
            body = (
                "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(30)"
            )
            run, _ = await _start_long_task(api, kernel, "stubborn", body)
            status, _ = await api("POST", "flow_runs", run["id"], "cancel", body={})
            assert status == 200
            final = await _final(api, "the run to end", "flow_runs", run["id"])
        finally:
            unsubscribe()
        assert await kernel.execution_state() == "busy"
    assert final["state"]["type"] == "CANCELLED", final["state"]
    assert final["state"]["data"] == {"kernel_id": kernel.id, "kernel_stopped": False}
    assert "restart the kernel" in final["state"]["message"]
    said = [e for e in events if e.get("flow_run_id") == run["id"] and "kernel" in e]
    assert said and said[-1]["kernel"] == {"kernel_id": kernel.id, "stopped": False}


async def test_shutting_the_kernel_down_crashes_its_run(
    api: Api, jp_fetch: Any, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    async with started_kernel(jp_fetch, jp_serverapp) as kernel:
        run, _ = await _start_long_task(api, kernel, "shut_down", "import time\ntime.sleep(60)")
        kernel.client.stop_channels()
        await jp_fetch("api", "kernels", kernel.id, method="DELETE")

        final = await _final(api, "the run to end", "flow_runs", run["id"])
    assert final["state"]["type"] == "CRASHED", final["state"]
    assert "was shut down" in final["state"]["message"]


async def test_restarting_the_kernel_crashes_its_run(
    api: Api, jp_fetch: Any, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    async with started_kernel(jp_fetch, jp_serverapp) as kernel:
        run, _ = await _start_long_task(api, kernel, "restarted", "import time\ntime.sleep(60)")
        await jp_fetch("api", "kernels", kernel.id, "restart", method="POST", body="{}")

        final = await _final(api, "the run to end", "flow_runs", run["id"])
        assert final["state"]["type"] == "CRASHED", final["state"]
        assert "was restarted" in final["state"]["message"]
        # The restarted kernel loaded nbflow again and records its next run.
        await kernel.client.wait_for_ready(timeout=120)
        reply = await kernel.run("%%flow after_restart\nx = 2")
        assert reply["content"]["status"] == "ok", reply["content"]
        again = await _run_of(api, "after_restart")
        assert again["infrastructure_id"] == f"kernel:{kernel.id}"


async def test_a_kernel_that_dies_crashes_its_run(
    api: Api, jp_fetch: Any, jp_serverapp: Any, nbflow_app: NbflowApp
) -> None:
    async with started_kernel(jp_fetch, jp_serverapp) as kernel:
        run, _ = await _start_long_task(api, kernel, "killed", "import time\ntime.sleep(60)")
        km = jp_serverapp.kernel_manager.get_kernel(kernel.id)
        # Death is noticed by the restarter's poll, shortened from jupyter_client's 3 s.
        assert km._restarter.time_to_dead == nbflow_app.kernel_death_poll_seconds == 0.5
        os.kill(km.provisioner.process.pid, signal.SIGKILL)

        final = await _final(api, "the run to end", "flow_runs", run["id"])
    assert final["state"]["type"] == "CRASHED", final["state"]
    assert "died" in final["state"]["message"]
