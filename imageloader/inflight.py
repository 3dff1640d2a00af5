"""One task, many awaiters: :class:`Flight`.

A load in flight (:mod:`imageloader.loader`), a source object being fetched and
parsed (:mod:`imageloader.objectcache`) and a WADO-RS frame request
(:mod:`imageloader.dicom.wadors`) each run once for every caller that wants them.
Each awaiter is a future: it gets the task's outcome, an
:class:`~imageloader.errors.ImageLoaderError` naming the awaiter's own imageId when
it gave one. An awaiter that leaves (its future cancelled, as cancelling the task
awaiting it does) does not stop the task for the others; the last one to leave does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

from .errors import ImageLoaderError

__all__ = ["Flight"]

T = TypeVar("T")


class Flight(Generic[T]):
    """A task run once for the callers that :meth:`join` it (or are :meth:`attach`-ed)."""

    __slots__ = ("_awaiters", "task")

    def __init__(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> None:
        self.task: asyncio.Task[T] = asyncio.get_running_loop().create_task(coro, name=name)
        self._awaiters: dict[asyncio.Future[T], str | None] = {}
        self.task.add_done_callback(self._settle)

    @property
    def awaiters(self) -> int:
        """Callers awaiting the task now."""
        return len(self._awaiters)

    def done(self) -> bool:
        """Whether the task has finished (or was cancelled)."""
        return self.task.done()

    async def join(self, image_id: str | None = None) -> T:
        """Await the task's result; an ImageLoaderError names ``image_id`` when given."""
        future: asyncio.Future[T] = self.task.get_loop().create_future()
        self.attach(future, image_id)
        return await future

    def attach(self, future: asyncio.Future[T], image_id: str | None = None) -> None:
        """Make ``future`` an awaiter: it gets the outcome; cancelling it leaves.

        A future that is done already is not attached (its caller has left).
        """
        if future.done():
            return
        if self.task.done():
            self._resolve(future, image_id)
            return
        self._awaiters[future] = image_id
        future.add_done_callback(self._left)

    def _left(self, future: asyncio.Future[T]) -> None:
        self._awaiters.pop(future, None)
        if not self._awaiters and not self.task.done():
            self.task.cancel()  # nobody awaits it any more

    def _settle(self, task: asyncio.Task[T]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved: its awaiters may all have left
        awaiters, self._awaiters = self._awaiters, {}
        for future, image_id in awaiters.items():
            self._resolve(future, image_id)

    def _resolve(self, future: asyncio.Future[T], image_id: str | None) -> None:
        if future.done():
            return
        task = self.task
        if task.cancelled():
            future.cancel()
            return
        exc = task.exception()
        if exc is None:
            future.set_result(task.result())
        elif isinstance(exc, ImageLoaderError) and image_id is not None:
            # One failure shared by several loads: each names its own imageId.
            future.set_exception(exc.for_image(image_id))
        else:
            future.set_exception(exc)
