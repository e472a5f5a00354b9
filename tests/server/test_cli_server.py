"""``nbflow server`` starts a headless Jupyter server with only the nbflow extension."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbflow.cli import EXIT_USAGE, main
from nbflow.cli.server import build_server
from nbflow.client.http import HTTPClient
from nbflow.schemas import Flow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _args(**overrides: Any) -> argparse.Namespace:
    values = {
        "ip": "127.0.0.1",
        "port": 0,
        "token": "t",
        "root_dir": None,
        "db_url": None,
        "no_services": False,
        "allow_root": False,
        "settings": [],
    }
    return argparse.Namespace(**(values | overrides))


def test_bad_options_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["server", "--root-dir", str(tmp_path / "missing")]) == EXIT_USAGE
    assert "--root-dir" in capsys.readouterr().err
    assert main(["server", "--set", "nonsense"]) == EXIT_USAGE
    assert "CLASS.TRAIT=VALUE" in capsys.readouterr().err
    assert main(["server", "--port", "70000"]) == EXIT_USAGE


@pytest.mark.slow
def test_nbflow_server_serves_the_api(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "NBFLOW_HOME": str(tmp_path / "home"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
    }
    env.pop("NBFLOW_API_URL", None)
    command = [
        sys.executable, "-m", "nbflow", "server",
        "--port", str(port), "--token", "secret-token", "--root-dir", str(tmp_path),
        "--no-services", "--set", "NbflowApp.default_runner=docker",
    ]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/nbflow/api/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                response = httpx.get(
                    f"{url}/openapi.json", headers={"Authorization": "token secret-token"}
                )
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.json()["openapi"].startswith("3.1")
        assert httpx.get(f"{url}/flows").status_code == 403
        with HTTPClient(url, token="secret-token") as client:
            flow = client.create_flow(Flow(name="from-cli"))
            assert client.read_flow_by_name("from-cli").id == flow.id
        assert (tmp_path / "home" / "nbflow.db").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_build_server_loads_only_nbflow(tmp_path: Path) -> None:
    app = build_server(
        _args(
            root_dir=str(tmp_path),
            db_url=f"sqlite:///{tmp_path / 'x.db'}",
            no_services=True,
            settings=["NbflowApp.default_runner=docker", "NbflowApp.late_after_seconds=30"],
        )
    )
    assert set(app.extension_manager.extensions) == {"nbflow_server"}
    assert app.open_browser is False and app.root_dir == str(tmp_path)
    assert app.identity_provider.token == "t"
    nbflow_app = app.extension_manager.extension_points["nbflow"].app
    assert nbflow_app.default_runner == "docker"
    assert nbflow_app.late_after_seconds == 30
    assert nbflow_app.services_enabled is False
    assert nbflow_app.db_url == f"sqlite:///{tmp_path / 'x.db'}"
