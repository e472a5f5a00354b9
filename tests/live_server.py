"""A real ``nbflow server`` in a subprocess, for tests of clients (CLI, kernels, fuzzing).

``with LiveServer(tmp) as server:`` starts ``python -m nbflow server`` on a free port with
its own ``NBFLOW_HOME``, root directory and token, waits until the API answers, and stops
it (SIGTERM, then kill) on exit.  ``server.env`` is the environment a client needs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

__all__ = ["LiveServer"]

TOKEN = "live-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """Start and stop an ``nbflow server`` subprocess under ``base``."""

    def __init__(
        self,
        base: Path,
        *,
        services: bool = False,
        db_url: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.base = base
        self.root = base / "root"
        self.home = base / "server-home"
        self.port = _free_port()
        self.token = TOKEN
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/nbflow/api/v1"
        self.services = services
        self.db_url = db_url
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = base / "server.log"

    @property
    def env(self) -> dict[str, str]:
        """Return a client's environment: this server's URL and token, no other NBFLOW_*."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW")}
        env.update(
            NBFLOW_API_URL=self.api_url,
            NBFLOW_API_TOKEN=self.token,
            NBFLOW_HOME=str(self.base / "client-home"),
        )
        return env

    def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait until its API answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NBFLOW")}
        env.update(
            NBFLOW_HOME=str(self.home),
            JUPYTER_RUNTIME_DIR=str(self.base / "runtime"),
            JUPYTER_CONFIG_DIR=str(self.base / "config"),
        )
        command = [
            sys.executable, "-m", "nbflow", "server", "--port", str(self.port),
            "--token", self.token, "--root-dir", str(self.root),
        ]  # fmt: skip
        if not self.services:
            command.append("--no-services")
        if self.db_url:
            command += ["--db-url", self.db_url]
        if os.geteuid() == 0:
            command.append("--allow-root")
        command += self.extra_args
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"token {self.token}"}
        while True:
            log_text = self.log.read_text(errors="replace")
            if self.proc.poll() is not None or "error adding extension" in log_text:
                self.stop()
                raise RuntimeError(f"nbflow server failed to start:\n{log_text[-3000:]}")
            try:
                if httpx.get(f"{self.api_url}/flows", headers=headers).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"nbflow server did not answer:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then kill after 10 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
