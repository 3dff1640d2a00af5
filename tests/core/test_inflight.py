"""Flight: one task, many awaiters, cancelled when the last leaves, errors named per awaiter."""

from __future__ import annotations

import asyncio

import pytest

from imageloader.errors import FetchError
from imageloader.inflight import Flight


async def test_many_awaiters_share_one_run() -> None:
    runs = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal runs
        runs += 1
        await gate.wait()
        return 42

    flight = Flight(work())
    waiters = [asyncio.ensure_future(flight.join()) for _ in range(3)]
    await asyncio.sleep(0)
    assert flight.awaiters == 3
    gate.set()
    assert await asyncio.gather(*waiters) == [42, 42, 42]
    assert runs == 1 and flight.awaiters == 0
    assert await flight.join() == 42  # a late awaiter gets the result at once


async def test_the_task_stops_when_its_last_awaiter_leaves() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    flight = Flight(work())
    first, second = (asyncio.ensure_future(flight.join()) for _ in range(2))
    await started.wait()
    first.cancel()
    await asyncio.sleep(0.01)
    assert not flight.done()  # one awaiter left: the other still waits
    second.cancel()
    await asyncio.wait_for(cancelled.wait(), 1)
    assert flight.task.cancelled()


async def test_a_failure_names_each_awaiters_image_id() -> None:
    async def work() -> None:
        await asyncio.sleep(0)
        raise FetchError("boom", image_id="x:1", url="http://h/o")

    flight = Flight(work())
    results = await asyncio.gather(
        flight.join("x:1"), flight.join("x:2"), flight.join(), return_exceptions=True
    )
    assert [type(r) for r in results] == [FetchError] * 3
    assert [r.image_id for r in results] == ["x:1", "x:2", "x:1"]  # type: ignore[union-attr]


async def test_a_cancelled_task_cancels_its_awaiters_and_a_done_future_is_not_attached() -> None:
    flight: Flight[None] = Flight(asyncio.sleep(60))
    waiter = asyncio.ensure_future(flight.join())
    gone = asyncio.get_running_loop().create_future()
    gone.cancel()
    flight.attach(gone)
    await asyncio.sleep(0)
    assert flight.awaiters == 1
    flight.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
