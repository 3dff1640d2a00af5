"""Event names and a small event bus: callbacks, and async iteration.

``bus.on(IMAGE_LOADED, callback)`` calls ``callback(event)`` synchronously when the
event is emitted; a callback that raises is logged and does not break loading.
``async for event in bus`` (or ``async with bus.subscribe(...) as events``) receives
events through a bounded buffer; when a slow consumer lets it fill, the oldest events
are dropped and counted in ``subscription.dropped``.

A subscription ends when it is closed, when its ``async with`` block ends, or when
nobody holds it any more: the bus keeps subscriptions weakly, so breaking out of
``async for event in bus`` (or the iterating task ending) unsubscribes at once
instead of buffering every later event, and the images they carry, for ever.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "IMAGE_CACHE_FULL",
    "IMAGE_CACHE_IMAGE_ADDED",
    "IMAGE_CACHE_IMAGE_REMOVED",
    "IMAGE_LOADED",
    "IMAGE_LOAD_FAILED",
    "IMAGE_LOAD_PROGRESS",
    "IMAGE_LOAD_STAGE",
    "IMAGE_RETRIEVAL_STAGE",
    "IMAGE_VOLUME_LOADING_COMPLETED",
    "VOLUME_CACHE_VOLUME_ADDED",
    "VOLUME_CACHE_VOLUME_REMOVED",
    "VOLUME_LOADED",
    "Event",
    "EventBus",
    "Subscription",
]

IMAGE_LOADED = "IMAGE_LOADED"
IMAGE_LOAD_FAILED = "IMAGE_LOAD_FAILED"
IMAGE_LOAD_PROGRESS = "IMAGE_LOAD_PROGRESS"
IMAGE_CACHE_IMAGE_ADDED = "IMAGE_CACHE_IMAGE_ADDED"
IMAGE_CACHE_IMAGE_REMOVED = "IMAGE_CACHE_IMAGE_REMOVED"
#: An image loaded but larger than the whole cache: returned to its callers uncached.
IMAGE_CACHE_FULL = "IMAGE_CACHE_FULL"
VOLUME_LOADED = "VOLUME_LOADED"
IMAGE_VOLUME_LOADING_COMPLETED = "IMAGE_VOLUME_LOADING_COMPLETED"
#: An image of a frame still arriving (``iter_image_stages``): detail ``image``,
#: ``decode_level``, ``bytes_received``. The complete frame is IMAGE_LOADED.
IMAGE_LOAD_STAGE = "IMAGE_LOAD_STAGE"
#: A volume's retrieve stage finished (Cornerstone's IMAGE_RETRIEVAL_STAGE): detail
#: ``stage_id``, ``number_of_images``, ``number_of_failures``, ``stage_duration_ms``,
#: ``start_duration_ms`` and ``volume``.
IMAGE_RETRIEVAL_STAGE = "IMAGE_RETRIEVAL_STAGE"
VOLUME_CACHE_VOLUME_ADDED = "VOLUME_CACHE_VOLUME_ADDED"
VOLUME_CACHE_VOLUME_REMOVED = "VOLUME_CACHE_VOLUME_REMOVED"

logger = logging.getLogger("imageloader.events")

Callback = Callable[["Event"], object]

#: Events a subscription buffers for a slow consumer before dropping the oldest. Events
#: carry their images, so this bounds what an idle subscriber can hold.
DEFAULT_BUFFER = 1_000


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its ``name``, the imageId (or volumeId) it concerns, and details.

    ``detail`` holds the event's payload: ``image`` for IMAGE_LOADED and cache
    events, ``error`` for IMAGE_LOAD_FAILED, progress counts for volume events.
    """

    name: str
    image_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Subscription:
    """An async iterator over events, fed by an :class:`EventBus`. Close it when done."""

    def __init__(self, bus: EventBus, names: frozenset[str] | None, maxsize: int) -> None:
        self._bus = bus
        self._names = names
        self._queue: collections.deque[Event] = collections.deque(maxlen=maxsize)
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.dropped = 0

    def _put(self, event: Event) -> None:
        if self._names is not None and event.name not in self._names:
            return
        if self._queue.maxlen is not None and len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        """Stop receiving; a pending ``__anext__`` ends the iteration."""
        self._closed = True
        self._bus._unsubscribe(self)
        self._wake()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Callbacks by event name, plus any number of async subscriptions."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callback]] = collections.defaultdict(list)
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()

    def on(self, name: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(event)`` for each event ``name``; returns an unsubscribe function."""
        self._callbacks[name].append(callback)
        return lambda: self.off(name, callback)

    def off(self, name: str, callback: Callback) -> None:
        """Remove a callback added with :meth:`on` (no error if it is not there)."""
        callbacks = self._callbacks.get(name)
        if callbacks and callback in callbacks:
            callbacks.remove(callback)

    def subscribe(
        self, names: Iterable[str] | None = None, *, maxsize: int = DEFAULT_BUFFER
    ) -> Subscription:
        """An async iterator of the events named (all events when ``names`` is None).

        At most ``maxsize`` events wait in it; beyond that the oldest are dropped and
        counted. Use it as ``async with bus.subscribe(...) as events:`` to end it
        explicitly; a subscription nobody holds any more ends by itself.
        """
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        sub = Subscription(self, frozenset(names) if names is not None else None, maxsize)
        self._subscriptions.add(sub)
        return sub

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.subscribe()

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    @property
    def subscriptions(self) -> int:
        """How many async subscriptions are open."""
        return len(self._subscriptions)

    def has_listeners(self, name: str) -> bool:
        """Whether emitting ``name`` would reach anyone (lets hot paths skip building events)."""
        return bool(self._callbacks.get(name)) or bool(self._subscriptions)

    def emit(self, name: str, image_id: str | None = None, **detail: Any) -> None:
        """Deliver an event to its callbacks and subscriptions; never raises."""
        if not self.has_listeners(name):
            return
        event = Event(name, image_id, detail)
        for callback in tuple(self._callbacks.get(name, ())):
            try:
                callback(event)
            except Exception:
                logger.exception("event callback %r for %s failed", callback, name)
        for sub in tuple(self._subscriptions):
            sub._put(event)

    def close(self) -> None:
        """End every subscription's iteration."""
        for sub in tuple(self._subscriptions):
            sub.close()
