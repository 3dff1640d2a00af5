"""Frames and pixels cross to the decode workers in shared memory, and never leak there."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from imageloader.decode import transport
from imageloader.decode.params import DecodedFrame
from imageloader.decode.pool import DecodePool
from imageloader.errors import DecodeError
from imageloader.image import PreScale

from . import pool_tasks


def segments() -> set[str]:
    """This process's segments (other processes on the machine make their own)."""
    if not Path("/dev/shm").is_dir():
        return set()
    return {name for name in os.listdir("/dev/shm") if name.startswith(transport.segment_prefix())}


def test_args_and_results_round_trip_in_process() -> None:
    data = bytes(range(256)) * 1024  # 256 KiB: shared
    small = b"tiny"  # stays in the pipe
    shared, made = transport.share_args((data, small, 7))
    try:
        assert isinstance(shared[0], transport.SharedBytes) and shared[1:] == (small, 7)
        frame = DecodedFrame(
            np.arange(512 * 512, dtype=np.int16).reshape(512, 512),
            0, 1, False, "MONOCHROME2", PreScale(), 0.1, "test",
        )  # fmt: skip
        exported = transport.call(lambda d, s, n: (len(d), s, n, frame), shared)
        assert exported[:3] == (len(data), small, 7)
        assert isinstance(exported[3].pixels, transport.SharedArray)
        back = transport.materialize(exported)[3]
        np.testing.assert_array_equal(back.pixels, frame.pixels)
    finally:
        transport.release(made)
    assert shared[0].name.lstrip("/").startswith(f"imageloader-{os.getpid()}-")
    assert not any(ref.name.lstrip("/") in segments() for ref in shared[:1])


async def test_workers_name_their_segments_after_the_pool_process() -> None:
    pool = DecodePool(1, task_timeout=20)
    try:
        assert await pool.run(pool_tasks.segment_prefix) == f"imageloader-{os.getpid()}-"
    finally:
        await pool.aclose()


async def test_frames_and_pixels_cross_the_pool_without_leaking() -> None:
    before = segments()
    pool = DecodePool(2, task_timeout=20)
    try:
        data = os.urandom(300_000)
        want = int((np.frombuffer(data, np.uint8).astype(np.uint16) * 3).sum())
        results = await asyncio.gather(
            *(pool.run(pool_tasks.checksum_and_array, data) for _ in range(8))
        )
        for total, array in results:
            assert total == want and isinstance(array, np.ndarray) and array.size == 300_000
        # A memoryview into a larger body (as a multipart part is) works the same way.
        body = b"x" + data
        total, _ = await pool.run(pool_tasks.checksum_and_array, memoryview(body)[1:])
        assert total == want
        # Cancelled while running: the result is discarded, its segment unlinked.
        task = asyncio.create_task(pool.run(pool_tasks.big_array, 1_000_000, 0.3))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await pool.run(pool_tasks.echo, "flush")
        await asyncio.sleep(0.1)
        assert segments() <= before  # in use only while a task holds them
        # A crash mid-task: the task fails, its input segment is released.
        with pytest.raises(DecodeError):
            await pool.run(pool_tasks.crash, 0.05)
    finally:
        await pool.aclose()
    assert segments() <= before
