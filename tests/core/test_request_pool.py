"""Priority ordering under contention, limits, starvation and cancellation."""

from __future__ import annotations

import asyncio

import pytest

from imageloader.request_pool import RequestPool, RequestType

I, T, P, C = (
    RequestType.INTERACTION,
    RequestType.THUMBNAIL,
    RequestType.PREFETCH,
    RequestType.COMPUTE,
)


async def _record_order(
    pool: RequestPool, requests: list[tuple[RequestType, float, str]]
) -> list[str]:
    """Fill the pool with a blocker, queue ``requests``, then release one at a time."""
    order: list[str] = []
    blocker = await pool.acquire(I)
    release_next = asyncio.Event()

    async def run(rtype: RequestType, priority: float, name: str) -> None:
        async with pool.slot(rtype, priority):
            order.append(name)
            await release_next.wait()

    tasks = []
    for rtype, priority, name in requests:
        tasks.append(asyncio.create_task(run(rtype, priority, name)))
        await asyncio.sleep(0)
    assert pool.waiting() == len(requests)
    pool.release(blocker)
    for _ in requests:
        release_next.set()
        release_next = asyncio.Event()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    release_next.set()
    await asyncio.gather(*tasks)
    return order


async def test_type_then_priority_then_fifo() -> None:
    pool = RequestPool(capacity=1)
    order = await _record_order(
        pool,
        [
            (C, 0, "compute"),
            (P, 5, "prefetch-5"),
            (P, 0, "prefetch-0a"),
            (T, 0, "thumb"),
            (P, 0, "prefetch-0b"),
            (I, 1, "interaction-1"),
            (I, 0, "interaction-0"),
        ],
    )
    assert order == [
        "interaction-0",
        "interaction-1",
        "thumb",
        "prefetch-0a",
        "prefetch-0b",
        "prefetch-5",
        "compute",
    ]


async def test_interaction_starts_before_waiting_prefetch_when_capacity_is_shared() -> None:
    pool = RequestPool({P: 4, I: 4}, capacity=4)
    held = [await pool.acquire(P) for _ in range(4)]
    queued = [asyncio.create_task(pool.acquire(P)) for _ in range(16)]
    await asyncio.sleep(0)
    interaction = asyncio.create_task(pool.acquire(I))
    await asyncio.sleep(0)
    assert pool.running(P) == 4 and pool.waiting(P) == 16 and pool.waiting(I) == 1
    # Free one slot: the interaction request, not the 16 earlier prefetches, gets it.
    pool.release(held.pop())
    await asyncio.sleep(0)
    assert interaction.done() and not any(t.done() for t in queued)
    assert pool.running(I) == 1 and pool.running(P) == 3
    for ticket in held:
        pool.release(ticket)
    pool.release(interaction.result())
    for task in queued:
        pool.release(await asyncio.wait_for(task, 1))
    assert pool.running() == 0 and pool.waiting() == 0


async def test_per_type_limit_leaves_shared_room_to_others() -> None:
    pool = RequestPool({P: 2, I: 8}, capacity=8, yield_to_interaction=False)
    held = [await pool.acquire(P) for _ in range(2)]
    third = asyncio.create_task(pool.acquire(P))
    await asyncio.sleep(0)
    assert not third.done()  # prefetch is at its own limit
    fast = await asyncio.wait_for(pool.acquire(I), 1)  # interaction is not
    assert pool.running(I) == 1 and pool.running(P) == 2
    pool.release(held[0])
    ticket = await asyncio.wait_for(third, 1)
    for t in (held[1], fast, ticket):
        pool.release(t)
    assert pool.running() == 0


async def test_no_starvation_of_low_priority() -> None:
    pool = RequestPool({I: 1, C: 1}, capacity=1, starvation_seconds=0.05)
    stop = asyncio.Event()
    compute_ran = asyncio.Event()

    async def interaction_storm() -> None:
        while not stop.is_set():
            async with pool.slot(I):
                await asyncio.sleep(0.005)

    async def compute() -> None:
        async with pool.slot(C):
            compute_ran.set()

    storms = [asyncio.create_task(interaction_storm()) for _ in range(3)]
    await asyncio.sleep(0.01)
    compute_task = asyncio.create_task(compute())
    await asyncio.wait_for(compute_ran.wait(), 2)
    stop.set()
    await asyncio.gather(*storms, compute_task)


async def test_cancelled_waiter_leaves_counts_exact() -> None:
    pool = RequestPool({I: 1}, capacity=1)
    holder = await pool.acquire(I)
    waiter = asyncio.create_task(pool.acquire(I))
    await asyncio.sleep(0)
    assert pool.waiting(I) == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.waiting(I) == 0
    pool.release(holder)
    assert pool.running() == 0
    ticket = await asyncio.wait_for(pool.acquire(I), 1)
    pool.release(ticket)
    pool.release(ticket)  # idempotent
    assert pool.running() == 0


async def test_granted_but_cancelled_waiter_hands_the_slot_on() -> None:
    pool = RequestPool({I: 1}, capacity=1)
    holder = await pool.acquire(I)
    first = asyncio.create_task(pool.acquire(I))
    second = asyncio.create_task(pool.acquire(I))
    await asyncio.sleep(0)
    pool.release(holder)  # grants `first`, which has not resumed yet
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    ticket = await asyncio.wait_for(second, 1)
    assert pool.running() == 1
    pool.release(ticket)
    assert pool.running() == 0 and pool.waiting() == 0


async def test_reprioritize_moves_a_waiting_prefetch_ahead() -> None:
    pool = RequestPool(capacity=1)
    holder = await pool.acquire(I)
    order: list[str] = []

    async def job(rtype: RequestType, name: str) -> None:
        ticket = await pool.acquire(rtype)
        order.append(name)
        pool.release(ticket)

    thumb = asyncio.create_task(job(T, "thumb"))
    pre = asyncio.create_task(job(P, "prefetch"))
    await asyncio.sleep(0)
    waiting = [t for t in pool._fifos[P] if t._state.name == "WAITING"]
    assert pool.reprioritize(waiting[0], I) is True
    assert pool.reprioritize(waiting[0], C) is False  # never down
    pool.release(holder)
    await asyncio.gather(thumb, pre)
    assert order == ["prefetch", "thumb"]


def test_limits_validation() -> None:
    with pytest.raises(ValueError, match="limit"):
        RequestPool({P: 0})
    with pytest.raises(ValueError, match="capacity"):
        RequestPool(capacity=0)
    pool = RequestPool({"prefetch": 3})
    assert pool.limits[P] == 3


async def test_background_work_yields_while_someone_is_looking() -> None:
    pool = RequestPool({P: 8, I: 8}, capacity=16)
    prefetch = [await pool.acquire(P) for _ in range(8)]
    for ticket in prefetch[:6]:
        pool.release(ticket)
    interactive = await pool.acquire(I)
    # While an INTERACTION request runs, PREFETCH may hold only a quarter of its limit:
    # two are running, so a new one waits.
    waiting = asyncio.create_task(pool.acquire(P))
    await asyncio.sleep(0)
    assert not waiting.done() and pool.running(P) == 2
    pool.release(interactive)  # nobody looking: the full limit again
    ticket = await asyncio.wait_for(waiting, 1)
    for t in (*prefetch[6:], ticket):
        pool.release(t)
    quiet = RequestPool({P: 8}, capacity=16, yield_to_interaction=False)
    held = await quiet.acquire(I)
    assert len([await quiet.acquire(P) for _ in range(8)]) == 8
    quiet.release(held)


async def test_active_within_remembers_a_burst() -> None:
    pool = RequestPool()
    assert not pool.active_within(I, 10)
    ticket = await pool.acquire(I)
    assert pool.active_within(I, 0)  # running now
    pool.release(ticket)
    assert pool.active_within(I, 0.05)  # just finished
    await asyncio.sleep(0.08)
    assert not pool.active_within(I, 0.05)
    assert not pool.active_within(P, 10)
