"""Kernels started through the Jupyter server report to its nbflow API without set-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nbflow_server import NbflowApp
from tests.server.helpers import Api


@pytest.fixture
def autoload() -> bool:
    return True


@pytest.fixture
def jp_server_config(tmp_path: Path, autoload: bool) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"nbflow_server": True}},
        "NbflowApp": {
            "db_url": f"sqlite:///{tmp_path / 'nbflow.db'}",
            "secret_file": str(tmp_path / "secret"),
            "services_enabled": False,
            "kernel_autoload": autoload,
        },
    }


async def _run_code(jp_serverapp: Any, kernel_id: str, code: str) -> str:
    """Execute ``code`` in the kernel; return its stdout."""
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    kc = km.client()
    kc.start_channels()
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    try:
        await kc.wait_for_ready(timeout=120)
        reply = await kc.execute_interactive(code, output_hook=hook, timeout=120)
    finally:
        kc.stop_channels()
    assert reply["content"]["status"] == "ok", "".join(out)
    return "".join(out)


@pytest.mark.slow
async def test_kernel_gets_api_url_and_token_and_reports_here(
    api: Api,
    jp_fetch: Any,
    jp_serverapp: Any,
    nbflow_app: NbflowApp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NBFLOW_API_URL", raising=False)
    monkeypatch.delenv("NBFLOW_API_TOKEN", raising=False)
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id = json.loads(response.body)["id"]
    try:
        code = (
            "import json, os\n"
            "print(json.dumps({k: os.environ.get(k) for k in "
            "('NBFLOW_API_URL', 'NBFLOW_API_TOKEN')}))\n"
            "from nbflow.client import get_client\n"
            "from nbflow.schemas import Flow\n"
            "client = get_client()\n"
            "flow = client.create_flow(Flow(name='from-a-kernel'))\n"
            "print(type(client).__name__, flow.name)\n"
        )
        out = await _run_code(jp_serverapp, kernel_id, code)
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    first, second = out.strip().splitlines()[:2]
    env = json.loads(first)
    assert env["NBFLOW_API_URL"] == nbflow_app.api_url()
    assert env["NBFLOW_API_TOKEN"] == jp_serverapp.identity_provider.token
    assert second == "HTTPClient from-a-kernel"
    # The flow the kernel created is in this server's store.
    status, flows = await api("GET", "flows", params={"name": "from-a-kernel"})
    assert status == 200
    assert [f["name"] for f in flows["items"]] == ["from-a-kernel"]


@pytest.mark.slow
async def test_a_fresh_kernel_has_nbflow_loaded_and_knows_its_id(
    jp_fetch: Any, jp_serverapp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NBFLOW__KERNEL_ID", raising=False)
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id = json.loads(response.body)["id"]
    try:
        code = (
            "import os\n"
            "ip = get_ipython()\n"
            "print(ip.find_cell_magic('flow') is not None, ip.find_cell_magic('task') is not None)\n"
            "print(os.environ.get('NBFLOW__KERNEL_ID'))\n"
        )
        out = await _run_code(jp_serverapp, kernel_id, code)
        # A notebook's own %load_ext nbflow cell stays silent.
        quiet = await _run_code(jp_serverapp, kernel_id, "%load_ext nbflow")
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    magics, env_id = out.strip().splitlines()[:2]
    assert magics == "True True"
    assert env_id == kernel_id
    assert quiet == ""


@pytest.mark.slow
@pytest.mark.parametrize("autoload", [False])
async def test_autoload_can_be_turned_off(jp_fetch: Any, jp_serverapp: Any, autoload: bool) -> None:
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kernel_id = json.loads(response.body)["id"]
    try:
        out = await _run_code(
            jp_serverapp, kernel_id, "print(get_ipython().find_cell_magic('flow') is None)"
        )
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert out.strip() == "True"
