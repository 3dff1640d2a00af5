"""DecodePool: priorities inside the pool, cancellation, crashes, hangs, clean shutdown."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imageloader.decode.pool import DecodePool
from imageloader.errors import DecodeError, LoaderClosedError, LoadTimeoutError

from ..processes import worker_children
from . import pool_tasks


def child_pids() -> set[int]:
    return set(worker_children())


@pytest.fixture
async def pool() -> AsyncIterator[DecodePool]:
    p = DecodePool(1, task_timeout=20)
    await p.warm()
    try:
        yield p
    finally:
        await p.aclose()


async def test_runs_in_a_worker_process_and_closes_without_leaving_children() -> None:
    before = child_pids()
    pool = DecodePool(2)
    assert pool.pids() == []  # nothing starts before it is needed
    await pool.warm()
    pids = set(pool.pids())
    assert len(pids) == 2 and pids <= child_pids()
    results = await asyncio.gather(*(pool.run(pool_tasks.where) for _ in range(6)))
    assert {pid for pid, _ in results} <= pids and os.getpid() not in {r[0] for r in results}
    await pool.aclose()
    assert child_pids() == before
    with pytest.raises(LoaderClosedError):
        await pool.run(pool_tasks.echo, 1)


async def test_the_first_task_starts_every_worker_at_once() -> None:
    # One task: a lazy pool would start one process now and the second only when two
    # tasks are queued, ~0.4 s into the user's first batch.
    pool = DecodePool(2, task_timeout=20)
    try:
        first = asyncio.create_task(pool.run(pool_tasks.where))
        await asyncio.sleep(0)
        assert len(pool.pids()) == 2  # both started with the first task
        pid, _ = await first
        # Both answered their start: the second runs a task without starting anything.
        results = await asyncio.gather(*(pool.run(pool_tasks.echo, n, 0.2) for n in range(2)))
        assert results == [0, 1] and len(set(pool.pids())) == 2 and pid in pool.pids()
        assert pool.restarts == 0
    finally:
        await pool.aclose()


async def test_interaction_overtakes_a_prefetch_backlog(pool: DecodePool) -> None:
    order: list[str] = []

    async def job(name: str, request_type: str) -> None:
        await pool.run(pool_tasks.echo, name, 0.02, request_type=request_type)
        order.append(name)

    prefetch = [asyncio.create_task(job(f"p{i}", "prefetch")) for i in range(40)]
    await asyncio.sleep(0.05)
    urgent = asyncio.create_task(job("urgent", "interaction"))
    await asyncio.gather(urgent, *prefetch)
    # At most `depth` prefetches were already handed to the worker ahead of it.
    assert order.index("urgent") <= pool.depth + 2, order[:8]
    assert len(order) == 41


async def test_cancelled_queued_decodes_never_reach_a_worker(
    pool: DecodePool, tmp_path: Path
) -> None:
    blocker = asyncio.create_task(pool.run(pool_tasks.echo, "b", 0.3))
    await asyncio.sleep(0.05)
    paths = [tmp_path / f"{i}" for i in range(10)]
    tasks = [asyncio.create_task(pool.run(pool_tasks.touch, str(p))) for p in paths]
    await asyncio.sleep(0.01)
    # The first `depth - 1` were handed to the worker already; the rest are queued.
    handed = pool.depth - 1
    for task in tasks[handed:]:
        task.cancel()
    await blocker
    await asyncio.gather(*tasks, return_exceptions=True)
    await pool.run(pool_tasks.echo, "flush")
    ran = [p.exists() for p in paths]
    assert ran == [True] * handed + [False] * (len(paths) - handed)
    assert pool.queued == 0


async def test_a_crashing_worker_fails_only_its_task_and_the_pool_recovers() -> None:
    pool = DecodePool(2, task_timeout=20)
    try:
        await pool.warm()
        others = [asyncio.create_task(pool.run(pool_tasks.echo, i, 0.1)) for i in range(6)]
        victim = asyncio.create_task(pool.run(pool_tasks.crash))
        results = await asyncio.gather(*others, victim, return_exceptions=True)
        assert results[:6] == list(range(6))
        assert isinstance(results[6], DecodeError) and "died" in str(results[6])
        assert pool.restarts == 1
        # Both workers serve again: the dead one was replaced on demand.
        after = await asyncio.gather(*(pool.run(pool_tasks.where) for _ in range(4)))
        assert len({pid for pid, _ in after}) == 2
        assert len(pool.pids()) == 2
    finally:
        await pool.aclose()


async def test_a_hung_decode_is_killed_after_its_timeout() -> None:
    pool = DecodePool(1, task_timeout=0.5)
    try:
        await pool.warm()
        pid = pool.pids()[0]
        hung = asyncio.create_task(pool.run(pool_tasks.hang))
        queued = asyncio.create_task(pool.run(pool_tasks.echo, "next"))
        with pytest.raises(LoadTimeoutError):
            await asyncio.wait_for(hung, 10)
        assert await asyncio.wait_for(queued, 10) == "next"  # requeued, not failed
        assert pool.pids() and pool.pids()[0] != pid
    finally:
        await pool.aclose()


async def test_worker_exceptions_are_typed(pool: DecodePool) -> None:
    with pytest.raises(DecodeError, match="ValueError: codec exploded"):
        await pool.run(pool_tasks.fail_foreign)
    with pytest.raises(DecodeError, match="bad codestream") as info:
        await pool.run(pool_tasks.fail_typed)
    assert info.value.image_id == "x:1"
    assert await pool.run(pool_tasks.echo, 5) == 5


async def test_in_process_mode_runs_on_a_thread_not_the_loop() -> None:
    pool = DecodePool(0)
    try:
        pid, thread = await pool.run(pool_tasks.where)
        assert pid == os.getpid() and thread.startswith("imageloader-decode")
        with pytest.raises(DecodeError):
            await pool.run(pool_tasks.fail_foreign)
        assert pool.pids() == []
    finally:
        await pool.aclose()


async def test_finished_tasks_leave_no_reference_cycles(pool: DecodePool) -> None:
    # A cycle job -> future -> callback -> job would keep every result alive until the
    # garbage collector runs: a prefetch's decoded frames would pile up in memory.
    import gc

    gc.collect()
    gc.disable()
    try:
        results = await asyncio.gather(*(pool.run(pool_tasks.echo, bytes(1000)) for _ in range(20)))
        assert len(results) == 20
        del results
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        leftovers = [o for o in gc.garbage if type(o).__name__ in ("_Job", "Future")]
        assert leftovers == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_the_timeout_does_not_count_the_worker_starting() -> None:
    # A cold worker takes longer to start (spawn + imports) than this timeout; a task
    # waiting for it must not be killed for the start-up time.
    pool = DecodePool(1, task_timeout=0.15)
    try:
        assert await asyncio.wait_for(pool.run(pool_tasks.echo, "cold", 0.05), 30) == "cold"
        with pytest.raises(LoadTimeoutError):
            await asyncio.wait_for(pool.run(pool_tasks.hang), 30)
        # The replacement process starts cold too; the next task still succeeds.
        assert await asyncio.wait_for(pool.run(pool_tasks.echo, "again", 0.05), 30) == "again"
    finally:
        await pool.aclose()


def test_a_daemonic_process_decodes_on_threads() -> None:
    import multiprocessing

    process = multiprocessing.current_process()
    was = process.daemon
    process._config["daemon"] = True  # as inside a Dask worker
    try:
        pool = DecodePool(3)
    finally:
        process._config["daemon"] = was
    assert pool.in_process and pool._threads == 3


async def test_urgent_work_finds_a_free_worker() -> None:
    import time

    pool = DecodePool(2, task_timeout=20)
    urgent = False
    pool.urgent = lambda: urgent
    try:
        await pool.warm()
        # Nothing urgent: background work fills both workers, `depth` tasks deep.
        background = [
            asyncio.create_task(pool.run(pool_tasks.echo, i, 0.3, request_type="prefetch"))
            for i in range(2 * pool.depth + 2)
        ]
        await asyncio.sleep(0.1)
        assert pool.running == 2 * pool.depth
        await asyncio.gather(*background)
        # Someone is looking: background work keeps to one worker, one task at a time,
        # and an interactive decode starts at once on the other.
        urgent = True
        background = [
            asyncio.create_task(pool.run(pool_tasks.echo, i, 0.3, request_type="prefetch"))
            for i in range(4)
        ]
        await asyncio.sleep(0.1)
        assert pool.running == 1
        started = time.perf_counter()
        assert await pool.run(pool_tasks.echo, "now", request_type="interaction") == "now"
        assert time.perf_counter() - started < 0.2  # not behind a 0.3 s background task
        urgent = False
        pool._dispatch()
        await asyncio.gather(*background)
    finally:
        await pool.aclose()
