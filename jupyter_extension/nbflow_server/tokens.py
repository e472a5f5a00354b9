"""Per-run API tokens: an HMAC of the flow run id under a secret only the server knows.

A runner receives ``nbflow-run.<run id>.<signature>`` in ``NBFLOW_API_TOKEN``.  The token
lets its holder report on that one run (states, heartbeats, task runs, logs, artifacts) and
read that run and its deployment; it is never the user's Jupyter token and opens nothing
else.  Tokens need no storage: the server recomputes the signature to check one.

A valid signature only names the run: what the token may do is
:mod:`nbflow_server.capabilities`, and it stops working once that run is terminal (the
``endpoint`` decorator reads the run on every request).  Replacing the secret file
revokes every token.  docs/security.md describes the whole scheme.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from uuid import UUID

from nbflow.client.http import RUN_TOKEN_PREFIX

__all__ = ["RUN_TOKEN_PREFIX", "RunTokenSigner", "load_or_create_secret"]


def load_or_create_secret(path: Path) -> bytes:
    """Return the server secret stored at ``path``, creating it (mode 0600) if missing."""
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = secrets.token_hex(32).encode("ascii")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    if len(data) < 32:
        raise ValueError(
            f"the nbflow server secret in {path} is shorter than 32 bytes; delete the file "
            "so the server creates a new one (existing run tokens stop working)"
        )
    return data


class RunTokenSigner:
    """Mint and verify run tokens with one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _signature(self, flow_run_id: UUID) -> str:
        message = b"nbflow-run-token:" + str(flow_run_id).encode("ascii")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def mint(self, flow_run_id: UUID) -> str:
        """Return the token that allows reporting on ``flow_run_id`` only."""
        return f"{RUN_TOKEN_PREFIX}{flow_run_id}.{self._signature(flow_run_id)}"

    def verify(self, token: str) -> UUID | None:
        """Return the run id a genuine token is for, or None for anything else."""
        if not token.startswith(RUN_TOKEN_PREFIX):
            return None
        run_part, _, signature = token[len(RUN_TOKEN_PREFIX) :].partition(".")
        try:
            flow_run_id = UUID(run_part)
        except ValueError:
            return None
        if not hmac.compare_digest(signature, self._signature(flow_run_id)):
            return None
        return flow_run_id
