"""The service contract: start in order, stop in reverse, failing ticks do not kill a loop."""

from __future__ import annotations

import asyncio

import pytest

from nbflow_server.services import PeriodicService, Service, ServiceGroup


class Recorder(Service):
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    async def start(self) -> None:
        if self.fail:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")


class Ticker(PeriodicService):
    name = "ticker"

    def __init__(self) -> None:
        super().__init__(interval=3600)
        self.ticks = 0
        self.ticked = asyncio.Event()

    async def tick(self) -> None:
        self.ticks += 1
        self.ticked.set()
        if self.ticks == 1:
            raise ValueError("first tick fails")


async def test_group_starts_in_order_and_stops_in_reverse() -> None:
    log: list[str] = []
    group = ServiceGroup([Recorder("a", log), Recorder("b", log)])
    await group.start()
    assert group.running == ["a", "b"]
    await group.stop()
    await group.stop()
    assert log == ["start a", "start b", "stop b", "stop a"]


async def test_a_service_failing_to_start_stops_the_others() -> None:
    log: list[str] = []
    group = ServiceGroup([Recorder("a", log), Recorder("b", log, fail=True)])
    with pytest.raises(RuntimeError, match="b cannot start"):
        await group.start()
    assert log == ["start a", "stop a"] and group.running == []


async def test_periodic_service_survives_a_failing_tick_and_wakes_on_demand() -> None:
    ticker = Ticker()
    await ticker.start()
    try:
        await asyncio.wait_for(ticker.ticked.wait(), timeout=30)
        ticker.ticked.clear()
        ticker.wake()
        await asyncio.wait_for(ticker.ticked.wait(), timeout=30)
        assert ticker.ticks == 2
    finally:
        await ticker.stop()
        await ticker.stop()


def test_interval_must_be_positive() -> None:
    class Idle(PeriodicService):
        async def tick(self) -> None:
            pass

    with pytest.raises(ValueError, match="interval"):
        Idle(0)
