"""Real receivers for notification tests: an HTTP server and an SMTP server (aiosmtpd).

Both listen on a free port of 127.0.0.1 in a thread of the test process and record what
they receive.  The HTTP receiver answers each POST with the next status of its script
(then 200), so a test can refuse the first attempt and accept the second, or holds every
request until the test opens its ``gate``.  The server
fixtures of tests/server (a live jupyter_server with nbflow_server) are available here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.databases import BACKENDS, database_url
from tests.server.conftest import *  # noqa: F403  (jp_server_config, nbflow_app, api, pytest-jupyter)


@dataclass
class HTTPReceiver:
    """A webhook receiver: records every POST, answers the scripted statuses, then 200."""

    statuses: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: When set, every request waits for it before it is answered (a receiver that hangs).
    gate: threading.Event | None = None

    def answer(self, body: bytes, path: str) -> int:
        with self.lock:
            self.received.append({"path": path, "json": json.loads(body or b"null")})
        if self.gate is not None:
            self.gate.wait(300)
        with self.lock:
            status = self.statuses.pop(0) if self.statuses else 200
            self.answered.append(status)
            return status


@pytest.fixture
def http_receiver() -> Iterator[HTTPReceiver]:
    """Start a webhook receiver on a free port; ``receiver.url`` is its address."""
    receiver = HTTPReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status = receiver.answer(self.rfile.read(length), self.path)
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status < 400 else b"receiver refused this one")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class SMTPReceiver:
    """An SMTP server's inbox: (envelope sender, recipients, parsed message)."""

    host: str
    port: int
    messages: list[tuple[str, list[str], Message]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(content))
        )
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_receiver() -> Iterator[SMTPReceiver]:
    """Start an aiosmtpd SMTP server on a free port of 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    receiver = SMTPReceiver("127.0.0.1", port)
    controller = Controller(receiver, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database on SQLite and on PostgreSQL."""
    with database_url(request.param, tmp_path) as url:
        yield url
