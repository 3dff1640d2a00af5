"""A bounded cache of parsed source objects shared by the images cut from them.

A Part 10 file holds many frames, a NIfTI file many slices: the object is fetched
and parsed once, however many of its images are loading at the same time, and kept
for the images still to come. It is bounded by count and bytes (least recently used
out first), and an object is released as soon as the last of its images that was
cached leaves the image cache, so a prefetched series does not keep its sources
alive twice.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import events as ev
from .inflight import Flight

if TYPE_CHECKING:
    import asyncio

__all__ = ["ObjectCache"]

T = TypeVar("T")


class ObjectCache(Generic[T]):
    """Objects by key; ``await get(key, load)`` runs ``load()`` once per key at a time."""

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        size_of: Callable[[T], int],
        key_of: Callable[[str], str | None] | None = None,
        events: ev.EventBus | None = None,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[str, tuple[T, int]] = OrderedDict()
        self._bytes = 0
        self._loading: dict[str, Flight[T]] = {}
        # key -> its images now in the image cache (``key_of`` maps an imageId to its key).
        self._key_of = key_of
        self._cached: dict[str, set[str]] = {}
        self.loads = 0
        if events is not None and key_of is not None:
            events.on(ev.IMAGE_CACHE_IMAGE_ADDED, self._image_added)
            events.on(ev.IMAGE_CACHE_IMAGE_REMOVED, self._image_removed)

    @property
    def size_bytes(self) -> int:
        """Bytes of the objects held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    @property
    def loading(self) -> int:
        """Keys being loaded now."""
        return len(self._loading)

    async def get(
        self,
        key: str,
        load: Callable[[], Coroutine[Any, Any, T]],
        *,
        image_id: str | None = None,
    ) -> T:
        """The object for ``key``, loading it with ``load()`` unless held or loading.

        A caller that stops waiting does not cancel the load for the others; the
        last one to leave does. With ``image_id``, a failure names that imageId.
        """
        held = self._items.get(key)
        if held is not None:
            self._items.move_to_end(key)
            return held[0]
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = Flight(load())
            loading.task.add_done_callback(functools.partial(self._loaded, key, loading))
        return await loading.join(image_id)

    def peek(self, key: str) -> T | None:
        """The object held for ``key``, or None (no loading, no recency change)."""
        held = self._items.get(key)
        return None if held is None else held[0]

    def put(self, key: str, value: T) -> None:
        """Hold ``value`` for ``key`` (replacing any), within the bounds."""
        self._keep(key, value)

    def _loaded(self, key: str, loading: Flight[T], task: asyncio.Task[T]) -> None:
        if self._loading.get(key) is loading:
            del self._loading[key]
        if task.cancelled() or task.exception() is not None:
            return
        self.loads += 1
        self._keep(key, task.result())

    def _keep(self, key: str, value: T) -> None:
        size = self._size_of(value)
        if size > self.max_bytes:
            return  # served to its waiters, but too large to keep
        self.discard(key)
        self._items[key] = (value, size)
        self._bytes += size
        while self._items and (len(self._items) > self.max_entries or self._bytes > self.max_bytes):
            self.discard(next(iter(self._items)))

    def discard(self, key: str) -> None:
        """Release the object held for ``key`` (no error if there is none)."""
        held = self._items.pop(key, None)
        if held is not None:
            self._bytes -= held[1]
        self._cached.pop(key, None)

    def clear(self) -> None:
        """Release every object and cancel loads nobody needs any more."""
        for key in list(self._items):
            self.discard(key)
        for loading in list(self._loading.values()):
            loading.task.cancel()

    def _image_added(self, event: ev.Event) -> None:
        assert self._key_of is not None
        key = self._key_of(event.image_id or "")
        if key is not None and key in self._items:
            self._cached.setdefault(key, set()).add(event.image_id or "")

    def _image_removed(self, event: ev.Event) -> None:
        assert self._key_of is not None
        key = self._key_of(event.image_id or "")
        images = self._cached.get(key) if key is not None else None
        if key is None or images is None:
            return
        images.discard(event.image_id or "")
        if not images:
            # The last cached image of this object left the cache: so does the object.
            del self._cached[key]
            self.discard(key)
