"""``DecodePool``: decode work in worker processes, in priority order (Cornerstone's maxWebWorkers).

Design:

- ``max_workers`` workers, each a single-process ``ProcessPoolExecutor`` (spawn start
  method: a child forked from a process running an event loop and threads can
  inherit a held lock). One process per executor is what lets a crash or a hang
  cost only the task that caused it: a ``ProcessPoolExecutor`` with several
  processes fails *every* pending task when one process dies, and cannot stop one
  hung task.
- Each worker holds at most ``depth`` tasks (3: one running, the next ones queued so
  the process does not idle while the event loop hands it work - 25-35% more
  frames/s than 1). While interactive work is on its way (``urgent``), workers hold one task
  each, so an urgent decode waits only for the first worker to be free. Everything
  else waits in one
  priority queue ordered by (request type, priority, arrival): an INTERACTION decode
  submitted behind 1,000 PREFETCH decodes is the next one handed to a worker. A
  cancelled task still in the queue never reaches a worker.
- A single worker process runs its tasks in order, so when it dies the first
  unfinished task is the one it was running: that task fails with ``DecodeError``,
  the ones queued behind it go back to the queue, and a fresh process replaces it.
  A task running longer than ``task_timeout`` gets its process killed and fails
  with ``LoadTimeoutError``.
- ``max_workers=0`` runs tasks on one thread of this process (the event loop is
  never blocked, and a debugger sees the decode). Inside daemonic processes (Dask
  workers), which cannot have children, ``max_workers`` threads are used instead.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import heapq
import itertools
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from ..errors import DecodeError, ImageLoaderError, LoaderClosedError, LoadTimeoutError
from ..request_pool import RequestType
from . import transport

__all__ = ["DecodePool", "default_worker_count"]

T = TypeVar("T")
_BACKGROUND_RANK = RequestType.PREFETCH.rank


def default_worker_count() -> int:
    """Cornerstone uses ``navigator.hardwareConcurrency``: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _init_worker(owner: int) -> None:
    # Ctrl-C goes to the whole process group; the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    transport.set_owner(owner)
    # Import the decode stack once, up front, so the first task is not slow.
    from . import worker  # noqa: F401


def _ping() -> int:
    return os.getpid()


@contextlib.contextmanager
def _without_main_module() -> Iterator[None]:
    """Start children without re-importing the parent's ``__main__``.

    spawn normally re-runs the main script in every child, so a script calling
    ``asyncio.run(main())`` without an ``if __name__ == "__main__"`` guard would run
    again in each worker. Decode tasks are functions of this package, so the
    children never need ``__main__``: hide it while processes start (the executor
    starts them inside ``submit``, on this thread).
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, Any] = {
        k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__
    }
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


class _Job:
    __slots__ = (
        "args",
        "cancelled",
        "cf",
        "executor",
        "fn",
        "future",
        "key",
        "segments",
        "slot",
        "started",
        "timed_out",
        "timeout",
        "timer",
    )

    def __init__(
        self,
        key: tuple[int, float, int],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        future: asyncio.Future[Any],
        timeout: float | None,
    ) -> None:
        self.key = key
        self.fn = fn
        self.args = args
        self.future = future
        self.timeout = timeout
        self.cancelled = False
        self.executor: concurrent.futures.Executor | None = None
        self.cf: concurrent.futures.Future[Any] | None = None
        self.segments: list[transport.Segment] = []
        self.slot: transport.Slot | None = None
        self.started = 0.0
        self.timed_out = False
        self.timer: asyncio.TimerHandle | None = None

    def __lt__(self, other: _Job) -> bool:
        return self.key < other.key


class _Worker:
    """One worker process (a one-process executor) and the tasks it holds, in order."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.executor: concurrent.futures.ProcessPoolExecutor | None = None
        self.jobs: collections.deque[_Job] = collections.deque()
        #: Shared-memory slots of this worker not in use (see transport.Slot).
        self.slots: list[transport.Slot] = []
        # A fresh process first starts and imports the decode stack (a second or so on
        # a busy machine): task timeouts count only once it has answered.
        self.ready = False

    def pid(self) -> int | None:
        # The executor's own table of its processes: the only handle on the child.
        processes = getattr(self.executor, "_processes", None) or {}
        for pid in list(processes):
            return int(pid)
        return None


class DecodePool:
    """Runs module-level functions in worker processes, in priority order.

    ``await pool.run(fn, *args, request_type=..., priority=...)`` returns ``fn(*args)``
    computed in a worker. Exceptions that are :class:`ImageLoaderError` pass through;
    any other becomes :class:`DecodeError`.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        task_timeout: float | None = 60.0,
        depth: int = 3,
        mp_context: str = "spawn",
    ) -> None:
        if max_workers is None:
            max_workers = default_worker_count()
        if max_workers < 0:
            raise ValueError("max_workers must be >= 0")
        self._threads = 1
        if max_workers > 0 and multiprocessing.current_process().daemon:
            # A daemonic process (e.g. a Dask worker) cannot have children: decode on
            # as many threads instead (the codecs release the GIL).
            self._threads, max_workers = max_workers, 0
        self.max_workers = max_workers
        self.task_timeout = task_timeout
        self.depth = max(1, depth)
        self._context = multiprocessing.get_context(mp_context)
        self._workers = [_Worker(i) for i in range(max_workers)]
        self._queue: list[_Job] = []
        self._seq = itertools.count()
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reapers: list[threading.Thread] = []
        #: Whether urgent (interactive) work is on its way; the loader wires this to
        #: its request pool. While it is, workers hold no queued background task.
        self.urgent: Callable[[], bool] | None = None
        self.restarts = 0
        self.completed = 0
        self._pids: set[int] = set()  # every worker process started (for the sweep)
        self._swept = False
        self._all_started = False  # whether the first start (of every worker) happened

    # -- introspection ---------------------------------------------------------------
    @property
    def in_process(self) -> bool:
        """Whether tasks run on a thread of this process (``max_workers == 0``)."""
        return self.max_workers == 0

    @property
    def queued(self) -> int:
        """Tasks waiting for a worker."""
        return sum(1 for job in self._queue if not job.cancelled)

    @property
    def running(self) -> int:
        """Tasks held by workers (running or next in line)."""
        return sum(len(w.jobs) for w in self._workers)

    def pids(self) -> list[int]:
        """Process ids of the live worker processes."""
        return [pid for w in self._workers if (pid := w.pid()) is not None]

    # -- lifecycle ---------------------------------------------------------------------
    def _check(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise LoaderClosedError("the decode pool is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        return loop

    def _executor(self, worker: _Worker) -> concurrent.futures.ProcessPoolExecutor:
        """The worker's executor, starting its process if there is none.

        The first start starts every worker at once: a process takes ~0.4 s to be
        ready, and one started only when a second task is queued (Cornerstone starts
        its workers at ``init``) arrives in the middle of the user's first batch. Each
        start costs ~10 ms of the loop (the fork and exec); the ready wait is the
        process's own.

        Every process start goes through here (the first task, ``warm()``, the
        replacement after a crash or a timeout): a one-process executor starts its
        process inside its first ``submit``, the ping below, so that call alone runs
        with ``__main__`` hidden. Later submits start nothing.
        """
        if worker.executor is None and not self._all_started:
            self._all_started = True
            for other in self._workers:
                if other is not worker:
                    self._executor(other)
        if worker.executor is None:
            executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=1,
                mp_context=self._context,
                initializer=_init_worker,
                initargs=(os.getpid(),),
            )
            worker.ready = False
            loop = self._loop
            assert loop is not None

            def answered(ping: concurrent.futures.Future[int]) -> None:
                if not ping.cancelled() and ping.exception() is None:
                    self._pids.add(ping.result())  # its segments are swept once it is gone
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    loop.call_soon_threadsafe(self._ready, worker, executor)

            if not self._swept:
                # Segments that processes killed mid-task (SIGKILL, OOM) left behind.
                self._swept = True
                transport.sweep()

            with _without_main_module():
                ping = executor.submit(_ping)
            worker.executor = executor
            ping.add_done_callback(answered)
        return worker.executor

    def _ready(self, worker: _Worker, executor: concurrent.futures.Executor) -> None:
        if worker.executor is not executor:
            return
        worker.ready = True
        if worker.jobs and worker.jobs[0].timer is None:
            self._started(worker, worker.jobs[0])

    def _submit_call(
        self, worker: _Worker, fn: Callable[..., T], *args: Any
    ) -> concurrent.futures.Future[T]:
        return self._executor(worker).submit(fn, *args)

    async def warm(self) -> None:
        """Start every worker process now and wait until each is ready."""
        self._check()
        if self.in_process:
            return
        futures = [asyncio.wrap_future(self._submit_call(w, _ping)) for w in self._workers]
        try:
            await asyncio.gather(*futures)
        except BrokenProcessPool as exc:
            raise DecodeError(f"a decode worker failed to start: {exc}") from exc

    async def aclose(self) -> None:
        """Fail queued tasks, stop every worker process and wait until they have exited."""
        if self._closed:
            return
        self._closed = True
        error = LoaderClosedError("the decode pool was closed")
        for job in self._queue:
            if not job.future.done():
                job.future.set_exception(error)
        self._queue.clear()
        executors = []
        for worker in self._workers:
            for slot in worker.slots:
                slot.destroy()
            worker.slots.clear()
            for job in worker.jobs:
                transport.release(job.segments)
                self._drop_slot(job)
                if job.timer is not None:
                    job.timer.cancel()
                if not job.future.done():
                    job.future.set_exception(error)
            if worker.jobs:
                self._kill(worker)  # do not wait for decodes nobody will read
            worker.jobs.clear()
            if worker.executor is not None:
                executors.append(worker.executor)
                worker.executor = None
        thread = self._thread
        self._thread = None
        reapers, self._reapers = self._reapers, []

        pids = set(self._pids)

        def shutdown() -> None:
            for reaper in reapers:
                reaper.join()
            for executor in executors:
                executor.shutdown(wait=True, cancel_futures=True)
            if thread is not None:
                thread.shutdown(wait=True, cancel_futures=True)
            for pid in pids:  # results of killed decodes nobody read
                transport.sweep(maker=pid)

        await asyncio.to_thread(shutdown)

    # -- running tasks -----------------------------------------------------------------
    async def run(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        request_type: RequestType | str = RequestType.INTERACTION,
        priority: float = 0,
        task_timeout: float | None = None,
        inline: bool = False,
    ) -> T:
        """``fn(*args)`` in a worker, queued by request type and priority.

        ``task_timeout`` overrides the pool's (``math.inf`` for none). ``inline`` runs
        a task that costs less than its trip to a process (an uncompressed frame: a
        copy and a modality LUT, ~0.1 ms against ~1 ms of inter-process transfer) on a
        thread of this process instead.
        """
        loop = self._check()
        job_timeout = self.task_timeout if task_timeout is None else task_timeout
        if job_timeout is not None and math.isinf(job_timeout):
            job_timeout = None
        if self.in_process or inline:
            return await self._run_in_thread(loop, fn, args)
        rank = RequestType(request_type).rank
        future: asyncio.Future[T] = loop.create_future()
        # A memoryview (a frame inside a larger body) cannot be pickled: small ones are
        # copied here, large ones go through shared memory when submitted.
        args = tuple(
            bytes(a) if isinstance(a, memoryview) and a.nbytes < transport.THRESHOLD else a
            for a in args
        )
        job = _Job((rank, priority, next(self._seq)), fn, args, future, job_timeout)
        heapq.heappush(self._queue, job)
        self._dispatch()
        try:
            return await future
        except asyncio.CancelledError:
            job.cancelled = True  # dropped if still queued; ignored if running
            raise

    async def _run_in_thread(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], args: tuple[Any, ...]
    ) -> T:
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._threads, thread_name_prefix="imageloader-decode"
            )
        try:
            return await loop.run_in_executor(self._thread, fn, *args)
        except ImageLoaderError:
            raise
        except Exception as exc:
            raise DecodeError(f"decode failed: {type(exc).__name__}: {exc}") from exc

    def _dispatch(self) -> None:
        while self._queue:
            job = self._queue[0]
            if job.cancelled or job.future.done():
                heapq.heappop(self._queue)
                continue
            worker = min(self._workers, key=lambda w: len(w.jobs))
            depth = self.depth
            if self.urgent is not None and self.urgent():
                # Interactive work is on its way: nothing waits inside a worker, where
                # an urgent decode could only queue behind it, and background work
                # leaves one worker free for it.
                depth = 1
                busy = sum(1 for w in self._workers if w.jobs)
                if job.key[0] >= _BACKGROUND_RANK and busy >= len(self._workers) - 1 > 0:
                    return
            if len(worker.jobs) >= depth:
                return
            heapq.heappop(self._queue)
            self._submit(worker, job)

    def _submit(self, worker: _Worker, job: _Job) -> None:
        job.executor = self._executor(worker)
        try:
            # Frames travel in shared memory (the worker's reused slots, taken now: a job
            # cancelled while queued never takes any); only names cross the pipe.
            job.slot = worker.slots.pop() if worker.slots else transport.Slot()
            shared, job.segments = transport.share_args(job.args, job.slot)
            out = job.slot.output_ref()
            cf = job.cf = self._submit_call(worker, transport.call, job.fn, shared, out)
        except (BrokenProcessPool, RuntimeError, OSError) as exc:
            transport.release(job.segments)
            self._drop_slot(job)
            job.future.set_exception(DecodeError(f"decode worker unavailable: {exc}"))
            self._replace(worker)
            return
        worker.jobs.append(job)
        if len(worker.jobs) == 1:
            self._started(worker, job)
        loop = self._loop
        assert loop is not None

        def done(cf: concurrent.futures.Future[Any]) -> None:
            # A closed event loop raises RuntimeError: nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._finished, worker, job, cf)

        cf.add_done_callback(done)

    def _started(self, worker: _Worker, job: _Job) -> None:
        job.started = time.monotonic()
        if job.timeout is not None and self._loop is not None and worker.ready:
            job.timer = self._loop.call_later(job.timeout, self._expire, worker, job)

    def _expire(self, worker: _Worker, job: _Job) -> None:
        job.timer = None
        if worker.jobs and worker.jobs[0] is job and job.executor is worker.executor:
            job.timed_out = True
            self._kill(worker)  # its executor then reports the process broken

    def _kill(self, worker: _Worker) -> None:
        pid = worker.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _finished(self, worker: _Worker, job: _Job, cf: concurrent.futures.Future[Any]) -> None:
        exc = cf.exception() if not cf.cancelled() else None
        if cf is not job.cf or job not in worker.jobs:
            # From a replaced process: the job was already settled or requeued. Its
            # result, if any, still holds shared memory (not its slot's: destroyed).
            if exc is None and not cf.cancelled():
                transport.discard(cf.result())
            return
        if isinstance(exc, BrokenProcessPool) or cf.cancelled():
            self._broken(worker)
            self._dispatch()
            return
        worker.jobs.remove(job)
        transport.release(job.segments)
        slot, job.slot = job.slot, None
        # The future's callbacks refer back to the job: break that cycle now, or the
        # decoded frame lives until the garbage collector runs.
        job.cf = None
        job.args = ()
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        if worker.jobs:
            self._started(worker, worker.jobs[0])
        self.completed += 1
        if exc is None:
            result = cf.result()
            if job.future.done():  # cancelled while it ran: nobody reads it
                transport.discard(result, slot)
            else:
                job.future.set_result(transport.materialize(result, slot))
        elif not job.future.done():
            if isinstance(exc, ImageLoaderError):
                job.future.set_exception(exc)
            else:
                job.future.set_exception(DecodeError(f"decode failed: {type(exc).__name__}: {exc}"))
        if slot is not None:
            worker.slots.append(slot)  # read out: the worker's next task may fill it
        self._dispatch()

    def _broken(self, worker: _Worker) -> None:
        """The worker's process died: fail the task it was running, requeue the rest."""
        jobs = list(worker.jobs)
        worker.jobs.clear()
        for job in jobs:
            transport.release(job.segments)  # requeued jobs share their frames afresh
            self._drop_slot(job)  # a slot the dead process mapped is not handed on
            if job.timer is not None:
                job.timer.cancel()
                job.timer = None
        for slot in worker.slots:
            slot.destroy()
        worker.slots.clear()
        if jobs:
            head, rest = jobs[0], jobs[1:]
            if not head.future.done():
                if head.timed_out:
                    head.future.set_exception(
                        LoadTimeoutError(f"decode took longer than {head.timeout} s; worker killed")
                    )
                else:
                    head.future.set_exception(
                        DecodeError("the decode worker process died (crash, kill or out of memory)")
                    )
            head.cf = None
            for job in rest:
                job.executor = None
                job.cf = None
                heapq.heappush(self._queue, job)
        self._replace(worker)

    @staticmethod
    def _drop_slot(job: _Job) -> None:
        if job.slot is not None:
            job.slot.destroy()
            job.slot = None

    def _replace(self, worker: _Worker) -> None:
        old = worker.executor
        dead = worker.pid()
        worker.executor = None
        self.restarts += 1
        if old is not None:

            def reap(executor: concurrent.futures.ProcessPoolExecutor = old) -> None:
                executor.shutdown(wait=True, cancel_futures=True)
                if dead is not None:  # what it was writing when it died
                    self._pids.discard(dead)
                    transport.sweep(maker=dead)

            # Reaps the dead process off the loop; the next task starts a fresh one.
            reaper = threading.Thread(target=reap, name="imageloader-reaper", daemon=True)
            reaper.start()
            self._reapers = [r for r in self._reapers if r.is_alive()] + [reaper]
