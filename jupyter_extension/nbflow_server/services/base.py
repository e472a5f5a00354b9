"""The service contract and the group that starts and stops services."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence

__all__ = ["PeriodicService", "Service", "ServiceGroup"]

logger = logging.getLogger("nbflow.server.services")


class Service(ABC):
    """A background activity of the server with a start and a stop."""

    name: str = "service"

    @abstractmethod
    async def start(self) -> None:
        """Begin working; return once started (long work goes in a task)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop working and release resources; safe to call twice."""


class PeriodicService(Service):
    """A service that calls :meth:`tick` every ``interval`` seconds on the event loop."""

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"interval={interval!r}: must be positive seconds")
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @abstractmethod
    async def tick(self) -> None:
        """Do one round of work."""

    def wake(self) -> None:
        """Run the next tick now instead of after the interval."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            # Cleared before the tick: a wake() during the tick runs the next one at once.
            self._wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s: tick failed; retrying in %s s", self.name, self.interval)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            except TimeoutError:
                pass

    async def start(self) -> None:
        """Start the loop as a task of the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        """Cancel the loop and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


class ServiceGroup:
    """Start services in order and stop them in reverse order."""

    def __init__(self, services: Sequence[Service] = ()) -> None:
        self.services = list(services)
        self._started: list[Service] = []

    async def start(self) -> None:
        """Start every service; a service that fails to start stops the ones already started."""
        for service in self.services:
            try:
                await service.start()
            except Exception:
                await self.stop()
                raise
            self._started.append(service)
            logger.info("started %s", service.name)

    async def stop(self) -> None:
        """Stop the started services, last first; errors are logged and the rest still stop."""
        while self._started:
            service = self._started.pop()
            try:
                await service.stop()
            except Exception:
                logger.exception("stopping %s failed", service.name)

    @property
    def running(self) -> list[str]:
        """Names of the services started and not yet stopped."""
        return [s.name for s in self._started]
