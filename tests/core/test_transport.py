"""Frames and pixels cross to the decode workers in shared memory, and never leak there."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imageloader import errors
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
        # While the pool is open, only its workers' reused slots remain (an input and
        # an output each, ``depth`` slots a worker at most): nothing per frame.
        held = segments() - before
        assert len(held) <= 2 * pool.depth * 2, held
        # A crash mid-task: the task fails, its input segment is released.
        with pytest.raises(DecodeError):
            await pool.run(pool_tasks.crash, 0.05)
    finally:
        await pool.aclose()
    assert segments() <= before


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.skipif(not transport._DIRECT, reason="segments are /dev/shm files on Linux only")
async def test_a_pool_sweeps_segments_of_dead_processes_and_never_a_live_ones() -> None:
    dead = _dead_pid()
    shm = Path(transport.SHM_DIR)
    left = [shm / f"imageloader-{dead}-{dead}-0123456789abcdef", shm / f"imageloader-{dead}-old"]
    live = shm / f"imageloader-{os.getpid()}-{os.getpid()}-fedcba9876543210"
    for path in [*left, live]:
        path.write_bytes(b"x")
    try:
        pool = DecodePool(1, task_timeout=20)
        try:
            assert await pool.run(pool_tasks.echo, "x") == "x"
        finally:
            await pool.aclose()
        assert not any(path.exists() for path in left)  # a SIGKILLed service's leftovers
        assert live.exists()  # this process's are its own business
    finally:
        for path in [*left, live]:
            path.unlink(missing_ok=True)


@pytest.mark.skipif(not transport._DIRECT, reason="segments are /dev/shm files on Linux only")
async def test_a_worker_killed_mid_result_leaves_no_segment(tmp_path: Path) -> None:
    before = segments()
    pool = DecodePool(1, task_timeout=1.5)
    shm = Path(transport.SHM_DIR)
    try:
        with pytest.raises(errors.LoadTimeoutError):
            await pool.run(pool_tasks.leave_segment_and_hang, str(tmp_path))
        marks = os.listdir(tmp_path)
        assert len(marks) == 1
        made = marks[0]
        for _ in range(100):  # the reaper sweeps once the killed process is gone
            if not (shm / made).exists():
                break
            await asyncio.sleep(0.05)
        assert not (shm / made).exists()
        assert await pool.run(pool_tasks.echo, "next") == "next"  # a fresh worker
    finally:
        await pool.aclose()
    assert segments() <= before


def test_frames_cost_the_resource_tracker_nothing() -> None:
    # multiprocessing's tracker took two pipe writes to its process per segment, and a
    # liveness probe: 1.8 ms of the event loop's time a frame on a busy machine. Count
    # what reaches it while frames cross (a fresh interpreter, so nothing else runs).
    script = (
        "import asyncio, os\n"
        "from multiprocessing import resource_tracker\n"
        "from imageloader.decode.pool import DecodePool\n"
        "from tests.core import pool_tasks\n"
        "sent = []\n"
        "real = resource_tracker._resource_tracker._send\n"
        "resource_tracker._resource_tracker._send = lambda *a: (sent.append(a), real(*a))\n"
        "async def main():\n"
        "    pool = DecodePool(1, task_timeout=20)\n"
        "    await pool.warm()\n"
        "    sent.clear()\n"
        "    data = os.urandom(300_000)\n"
        "    for _ in range(5):\n"
        "        total, array = await pool.run(pool_tasks.checksum_and_array, data)\n"
        "        assert array.size == 300_000\n"
        "    print(len(sent))\n"
        "    await pool.aclose()\n"
        "asyncio.run(main())\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # 5 frames in and 5 arrays out: none of the 10 segments told the tracker.
    assert int(done.stdout.strip()) == (0 if transport._DIRECT else 20)
