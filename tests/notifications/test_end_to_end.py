"""A real run of a real flow through a real server fires its rule exactly once.

The server runs its services (scheduler, dispatcher, monitors, notifications); the run is
a deployment's notebook executed by the subprocess runner, reporting over HTTP; its
``%%task extract`` cell raises, so the run is Failed.  The webhook receiver is a real
HTTP server that refuses the first attempt.  SQLite and PostgreSQL.  No timing asserts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbflow.settings import reload_settings
from nbflow_server import NbflowApp
from tests.notifications.conftest import HTTPReceiver
from tests.server.helpers import Api, make_notebook
from tests.server.live_services import eventually, services_config

pytestmark = pytest.mark.slow

FAILING_NOTEBOOK = [
    "%load_ext nbflow",
    "%%task prepare\nregion = 'EU'",
    "%%task extract\nraise KeyError('no sales for ' + region)",
]


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
def jp_server_config(db_url: str, tmp_path: Path, home: Path) -> dict[str, Any]:
    return services_config(
        db_url,
        tmp_path,
        heartbeat_timeout=300.0,
        runner_defaults={"subprocess": {"stream_output": False}},
        notification_backoff_seconds=0.2,
        notification_webhook_timeout=120.0,
        notification_link_url="https://jupyter.example.com/user/ana/",
    )


async def test_a_failed_run_notifies_once_with_its_failing_cell(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp, http_receiver: HTTPReceiver
) -> None:
    await jp_serverapp.extension_manager.start_all_extensions()
    http_receiver.statuses = [500]
    _, flow = await api("POST", "flows", body={"name": "sales"})
    _, dep = await api(
        "POST",
        "deployments",
        body={"flow_id": flow["id"], "name": "eu", "notebook": make_notebook(FAILING_NOTEBOOK)},
    )
    status, rule = await api(
        "POST",
        "automations",
        body={"action": "webhook", "webhook_url": http_receiver.url,
              "on_states": ["FAILED", "CRASHED"], "match_kind": "deployment",
              "match_value": "eu"},
    )  # fmt: skip
    assert status == 201, rule
    # A rule of another deployment stays silent.
    await api(
        "POST",
        "automations",
        body={"action": "webhook", "webhook_url": http_receiver.url, "on_states": ["FAILED"],
              "match_kind": "deployment", "match_value": "us"},
    )  # fmt: skip
    _, run = await api("POST", "deployments", dep["id"], "runs", body={})

    async def finished() -> Any:
        _, current = await api("GET", "flow_runs", run["id"])
        return current if current["state"]["type"] in ("FAILED", "CRASHED", "COMPLETED") else None

    final = await eventually(finished, what="the run to end", deadline=240)
    assert final["state"]["type"] == "FAILED", final["state"]

    async def delivered() -> Any:
        _, page = await api("GET", "automations", rule["id"], "deliveries")
        items = page["items"]
        return items if items and items[0]["status"] == "delivered" else None

    [delivery] = await eventually(delivered, what="the notification to be delivered")
    assert delivery["flow_run_id"] == run["id"]
    assert delivery["event"] == "Failed"
    assert [(a["attempt"], a["ok"]) for a in delivery["history"]] == [(1, False), (2, True)]
    assert len(http_receiver.received) == 2  # the refused attempt and its retry, nothing else
    body = http_receiver.received[-1]["json"]
    assert body["flow_run"]["name"] == run["name"]
    assert body["flow_run"]["deployment"] == "eu"
    assert body["failing_cell"]["name"] == "extract"
    assert "KeyError" in body["error"] and "no sales for EU" in body["error"]
    assert body["flow_run"]["url"] == (
        f"https://jupyter.example.com/user/ana/lab?nbflow-run={run['id']}"
    )
    _, everything = await api("GET", "notification_deliveries")
    assert len(everything["items"]) == 1


async def test_receivers_that_hang_never_block_the_api(
    api: Api, jp_serverapp: Any, nbflow_app: NbflowApp, http_receiver: HTTPReceiver
) -> None:
    """More hanging deliveries than the server has worker threads: the API still answers."""
    await jp_serverapp.extension_manager.start_all_extensions()
    http_receiver.gate = threading.Event()
    hook = {"action": "webhook", "webhook_url": http_receiver.url, "on_states": ["FAILED"]}
    rules = 40  # more than the event loop's default executor has threads (at most 32)
    for _ in range(rules):
        assert (await api("POST", "automations", body=hook))[0] == 201
    _, flow = await api("POST", "flows", body={"name": "hangs"})
    _, run = await api("POST", "flow_runs", body={"flow_id": flow["id"]})
    failed = {"type": "FAILED", "message": "boom"}
    status, _ = await api(
        "POST", "flow_runs", run["id"], "set_state", body={"state": failed, "force": True}
    )
    assert status == 200
    try:

        async def hanging() -> bool:
            return len(http_receiver.received) >= nbflow_app.notifications.workers  # type: ignore[union-attr]

        await eventually(hanging, what="the receiver to hold every notification thread")
        # Every delivery thread hangs in the receiver; the API's own threads are free.
        status, flows = await asyncio.wait_for(api("GET", "flows"), 120)
        assert status == 200 and flows["items"]
        status, _ = await asyncio.wait_for(api("POST", "flows", body={"name": "still-up"}), 120)
        assert status == 201
    finally:
        http_receiver.gate.set()

    async def all_delivered() -> bool:
        _, page = await api("GET", "notification_deliveries", params={"status": "delivered"})
        return len(page["items"]) == rules

    await eventually(all_delivered, what="every delivery once the receiver answers", deadline=240)
