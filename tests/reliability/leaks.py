"""Leak accounting: what a settled loader and a closed one must not hold."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from imageloader import ImageLoader
from tests.processes import worker_children


def fd_targets() -> list[str]:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return sorted(targets)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def loader_tasks() -> list[asyncio.Task[object]]:
    """Tasks that imageloader started and that are still running."""
    current = asyncio.current_task()
    found = []
    for task in asyncio.all_tasks():
        if task is current or task.done():
            continue
        if task.get_name().startswith("imageloader:") or _library_module(task.get_coro()):
            found.append(task)
    return found


def _library_module(coro: object) -> bool:
    """Whether ``coro`` is a coroutine defined in the ``imageloader`` package.

    Asked of the module the code belongs to (its frame's ``__name__``), not of the
    file's path: a clone or a virtualenv in a folder named ``imageloader`` would
    otherwise make every test's own task look like the library's.
    """
    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    module = frame.f_globals.get("__name__", "") if frame is not None else ""
    return module == "imageloader" or module.startswith("imageloader.")


async def assert_settled(loader: ImageLoader) -> None:
    """Nothing in flight, no slot held, no task running, cache accounting exact."""
    for _ in range(50):  # let cancellations and callbacks run to completion
        if not loader_tasks() and loader.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert loader.in_flight == 0, loader._inflight
    assert loader.request_pool.running() == 0 and loader.request_pool.waiting() == 0
    assert loader_tasks() == []
    if loader._decode_pool is not None:
        assert loader._decode_pool.queued == 0 and loader._decode_pool.running == 0
    if loader._http is not None and loader._http._session is not None:
        connector = loader._http._session.connector
        assert connector is not None and len(connector._acquired) == 0
    cached = sum(entry[1] for entry in loader.cache._images.values())
    volumes = sum(v.size_in_bytes for v in loader.cache._volumes.values())
    assert loader.cache.size_bytes == cached + volumes <= loader.cache.max_size_bytes


def python_children() -> dict[int, str]:
    """Decode workers and other Python children (servers the test runs are not counted)."""
    return {pid: cmd for pid, cmd in worker_children().items() if "multiprocessing" in cmd}


@dataclass
class ProcessAndFdCheck:
    """Children and file descriptors before a loader's life, compared after it closes."""

    children: dict[int, str]
    fds: list[str]

    @classmethod
    def start(cls) -> ProcessAndFdCheck:
        # The interpreter's resource tracker (one pipe, one process) starts with the
        # first worker and lives as long as the interpreter: count it in the baseline.
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
        return cls(python_children(), fd_targets())

    def assert_clean(self, slack_fds: int = 0) -> None:
        assert python_children() == self.children
        now = fd_targets()
        assert len(now) <= len(self.fds) + slack_fds, (now, self.fds)
