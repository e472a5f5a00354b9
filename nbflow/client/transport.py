"""The HTTP client's transport: retry through a server that blinks, for a bounded window.

A run must outlive a restart of its server, so every request that fails in transport
(connection refused or reset, timeout) or is answered 502/503/504 is sent again after an
exponential backoff with full jitter (0.2 s doubling up to :data:`MAX_BACKOFF_SECONDS`).
The window (``NBFLOW_API_RETRY_SECONDS``, 600 by default) is counted from the start of
the *outage*, not per request: once the server has been unreachable for longer than the
window, requests fail after one attempt until one succeeds again, so a long outage costs
every later request one try, not another window each.

Retrying is safe because the API's writes are idempotent: states carry their transition
id (a replayed state is accepted once), task runs are upserts keyed by id and task-run
states are inserted by id, artifacts are created by id.  Log batches are appended, so a
batch whose request reached the server just before it died may be stored twice (a
duplicate, never a loss).  Requests that are not idempotent (``retry="connect"``) are
sent again only when they certainly never reached the server (connection refused, or
503 from the server itself).  A response that follows a replay carries
``response.extensions["nbflow_replayed"] = True`` so the caller can read a 404 on a
replayed DELETE or a 409 on a replayed create as "already done".
"""

from __future__ import annotations

import gc
import logging
import random
import threading
import time
from typing import Literal

import httpx

__all__ = [
    "MAX_BACKOFF_SECONDS",
    "RETRY_STATUS_CODES",
    "RetryMode",
    "RetryingTransport",
]

logger = logging.getLogger("nbflow.client.transport")

#: Answers that mean "the server (or its proxy) is not there right now".
RETRY_STATUS_CODES = frozenset({502, 503, 504})
#: The longest pause between two attempts.
MAX_BACKOFF_SECONDS = 5.0
FIRST_BACKOFF_SECONDS = 0.2

#: ``"always"``: retry any transport error or 502/503/504 (idempotent requests);
#: ``"connect"``: only failures where the request never reached the server; ``"never"``.
RetryMode = Literal["always", "connect", "never"]

#: Errors raised before any byte of the request reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class RetryingTransport(httpx.BaseTransport):
    """Send through ``inner``, retrying while the server is unreachable (see the module)."""

    def __init__(
        self,
        inner: httpx.BaseTransport,
        *,
        retry_seconds: float,
        max_backoff: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        self.inner = inner
        self.retry_seconds = retry_seconds
        self.max_backoff = max_backoff
        self._lock = threading.Lock()
        #: ``time.monotonic()`` of the first failure of the current outage (None: none).
        self._down_since: float | None = None

    @property
    def unreachable_since(self) -> float | None:
        """When (``time.monotonic()``) the current outage began; None while the server answers."""
        return self._down_since

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``, retrying transport errors and 502/503/504 within the window."""
        mode: RetryMode = request.extensions.get("nbflow_retry", "always")
        replayed = False
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.inner.handle_request(request)
            except httpx.TransportError as exc:
                retry = mode == "always" or (mode == "connect" and isinstance(exc, _NOT_SENT))
                if not retry or not self._wait(request, attempt, f"{type(exc).__name__}: {exc}"):
                    raise
                replayed = replayed or not isinstance(exc, _NOT_SENT)
                continue
            if response.status_code in RETRY_STATUS_CODES and (
                mode == "always" or (mode == "connect" and response.status_code == 503)
            ):
                response.read()
                response.close()
                if self._wait(request, attempt, f"HTTP {response.status_code}"):
                    replayed = replayed or response.status_code != 503
                    continue
                return response
            self._recovered()
            if replayed:
                response.extensions["nbflow_replayed"] = True
            return response

    def _wait(self, request: httpx.Request, attempt: int, why: str) -> bool:
        """Sleep before the next attempt; False when the outage outlasted the window."""
        started = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = started
                logger.warning(
                    "nbflow server unreachable (%s %s: %s); retrying for up to %g s",
                    request.method,
                    request.url,
                    why,
                    self.retry_seconds,
                )
            down_for = started - self._down_since
        if down_for >= self.retry_seconds:
            return False
        ceiling = min(self.max_backoff, FIRST_BACKOFF_SECONDS * 2 ** min(attempt - 1, 16))
        delay = min(random.uniform(0, ceiling), self.retry_seconds - down_for)
        _sleep_with_gc(delay)
        return True

    def _recovered(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            down_for = time.monotonic() - self._down_since
            self._down_since = None
        logger.warning("nbflow server reachable again after %.1f s", down_for)

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()


def _sleep_with_gc(seconds: float) -> None:
    """Sleep with the cyclic garbage collector running.

    The recorder pauses the collector for the few milliseconds of a batch write; a write
    that waits out an outage must not keep it paused for minutes in the user's kernel.
    """
    paused = not gc.isenabled()
    if paused:
        gc.enable()
    try:
        time.sleep(seconds)
    finally:
        if paused:
            gc.disable()
