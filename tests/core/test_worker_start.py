"""Decode workers never run the user's ``__main__``, on every path that starts one.

A script with module-level code and no ``if __name__ == "__main__":`` guard would run
again in every spawned child if the child re-imported it. Each path that starts a
worker process is taken here, in a script run as a user runs it: the first start,
``warm()``, the replacement after a crash, the replacement after a decode timeout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

SCRIPT = """
import asyncio
import os
import signal
import time

from imageloader.decode.pool import DecodePool
from imageloader.errors import DecodeError, LoadTimeoutError

print("body ran", flush=True)


async def main():
    pool = DecodePool(2)
    first = await pool.run(os.getpid)  # the first start
    await pool.warm()  # starts the second worker
    pids = set(pool.pids())
    assert first in pids and len(pids) == 2, pids
    # A crash: the worker dies mid-task and is replaced on the next task.
    try:
        await pool.run(os.kill, first, signal.SIGKILL)
    except DecodeError:
        pass
    restarted = {await pool.run(os.getpid) for _ in range(4)}
    # A timeout: the hung worker is killed and replaced.
    try:
        await pool.run(time.sleep, 30, task_timeout=0.5)
    except LoadTimeoutError:
        pass
    after = {await pool.run(os.getpid) for _ in range(4)}
    print("restarts", pool.restarts, "new pids", len((restarted | after) - pids), flush=True)
    await pool.aclose()


asyncio.run(main())
"""


def test_every_worker_start_leaves_main_alone(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, script.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert lines.count("body ran") == 1, lines
    restarts, new = lines[-1].split()[1], lines[-1].split()[-1]
    assert int(restarts) >= 2 and int(new) >= 2, lines
