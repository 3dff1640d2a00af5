"""A byte-bounded LRU cache of images (and the volumes they belong to).

Recency is by last look-up (:meth:`ImageCache.get_image`). Adding an image evicts
the least recently used images until it fits; an image larger than the whole cache
raises :class:`~imageloader.errors.CacheFullError` and caches nothing. Volumes are
held until removed explicitly: image pressure never evicts them, and the images of a
volume are views into its array, so their bytes count once (with the volume).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

from . import events as ev
from .errors import CacheFullError

if TYPE_CHECKING:
    from .image import Image

__all__ = ["CachedVolume", "ImageCache"]


class CachedVolume(Protocol):
    """What the cache needs of a volume."""

    @property
    def volume_id(self) -> str: ...

    @property
    def size_in_bytes(self) -> int: ...


class ImageCache:
    """Byte-bounded LRU of images by imageId, plus explicitly managed volumes."""

    def __init__(self, max_size_bytes: int, events: ev.EventBus | None = None) -> None:
        if max_size_bytes < 0:
            raise ValueError("max_size_bytes must be >= 0")
        self._max = int(max_size_bytes)
        self._events = events or ev.EventBus()
        self._images: OrderedDict[str, tuple[Image, int]] = OrderedDict()
        self._volumes: dict[str, CachedVolume] = {}
        self._image_bytes = 0
        self._volume_bytes = 0
        self.hits = 0
        self.misses = 0

    # -- sizes ---------------------------------------------------------------------
    @property
    def max_size_bytes(self) -> int:
        """The capacity in bytes."""
        return self._max

    def set_max_size_bytes(self, value: int) -> None:
        """Change the capacity; shrinking evicts least recently used images."""
        if value < 0:
            raise ValueError("max_size_bytes must be >= 0")
        self._max = int(value)
        self._evict_until(0)

    @property
    def size_bytes(self) -> int:
        """Bytes held: images plus volumes."""
        return self._image_bytes + self._volume_bytes

    def __len__(self) -> int:
        return len(self._images)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._images

    def image_ids(self) -> list[str]:
        """Cached imageIds, least recently used first."""
        return list(self._images)

    # -- images --------------------------------------------------------------------
    def get_image(self, image_id: str) -> Image | None:
        """The cached image (marking it most recently used), or None. Counts hits and misses."""
        entry = self._images.get(image_id)
        if entry is None:
            self.misses += 1
            return None
        self._images.move_to_end(image_id)
        self.hits += 1
        return entry[0]

    def peek(self, image_id: str) -> Image | None:
        """The cached image without touching recency or counters."""
        entry = self._images.get(image_id)
        return entry[0] if entry is not None else None

    def put_image(
        self, image: Image, *, size_in_bytes: int | None = None, key: str | None = None
    ) -> None:
        """Add (or replace) an image, evicting least recently used ones to make room.

        ``size_in_bytes`` defaults to ``image.size_in_bytes``; images that are views
        into a cached volume are put with 0. ``key`` defaults to ``image.image_id``
        (a decode level has its own: :func:`imageloader.levels.level_key`); events
        carry the key.
        """
        key = image.image_id if key is None else key
        size = image.size_in_bytes if size_in_bytes is None else size_in_bytes
        if size > self._max - self._volume_bytes:
            raise CacheFullError(
                f"image of {size} bytes does not fit in a cache of {self._max} bytes"
                + (f" ({self._volume_bytes} held by volumes)" if self._volume_bytes else ""),
                image_id=image.image_id,
            )
        old = self._images.pop(key, None)
        if old is not None:
            self._image_bytes -= old[1]
        self._evict_until(size)
        self._images[key] = (image, size)
        self._image_bytes += size
        if old is None:
            self._events.emit(ev.IMAGE_CACHE_IMAGE_ADDED, key, image=image)

    def remove(self, image_id: str) -> bool:
        """Remove one image; returns whether it was cached."""
        entry = self._images.pop(image_id, None)
        if entry is None:
            return False
        self._image_bytes -= entry[1]
        self._events.emit(ev.IMAGE_CACHE_IMAGE_REMOVED, image_id, image=entry[0])
        return True

    def purge(self) -> None:
        """Remove every image and every volume."""
        for image_id in list(self._images):
            self.remove(image_id)
        for volume_id in list(self._volumes):
            self.remove_volume(volume_id)

    def _evict_until(self, incoming: int) -> None:
        excess = self.size_bytes + incoming - self._max
        if excess <= 0:
            return
        # Least recently used first, and only as many as needed: the cache may hold
        # hundreds of thousands of thumbnails. Views into a volume (size 0) free
        # nothing; they go with their volume.
        victims = []
        for image_id, (_, size) in self._images.items():
            if size:
                victims.append(image_id)
                excess -= size
                if excess <= 0:
                    break
        for image_id in victims:
            self.remove(image_id)

    # -- volumes -------------------------------------------------------------------
    def put_volume(self, volume: CachedVolume) -> None:
        """Hold a volume until :meth:`remove_volume`; evicts images to make room."""
        size = volume.size_in_bytes
        if size > self._max:
            raise CacheFullError(
                f"volume of {size} bytes does not fit in a cache of {self._max} bytes",
                image_id=volume.volume_id,
            )
        self.remove_volume(volume.volume_id)
        self._evict_until(size)
        if self.size_bytes + size > self._max:
            raise CacheFullError(
                f"volume of {size} bytes does not fit beside {self._volume_bytes} bytes of volumes",
                image_id=volume.volume_id,
            )
        self._volumes[volume.volume_id] = volume
        self._volume_bytes += size
        self._events.emit(ev.VOLUME_CACHE_VOLUME_ADDED, volume.volume_id, volume=volume)

    def get_volume(self, volume_id: str) -> CachedVolume | None:
        """The cached volume, or None."""
        return self._volumes.get(volume_id)

    def remove_volume(self, volume_id: str) -> bool:
        """Free a volume and the images that are views into it."""
        volume = self._volumes.pop(volume_id, None)
        if volume is None:
            return False
        self._volume_bytes -= volume.size_in_bytes
        image_ids = getattr(volume, "image_ids", ())
        for image_id in image_ids:
            entry = self._images.get(image_id)
            if entry is not None and entry[1] == 0:
                self.remove(image_id)
        self._events.emit(ev.VOLUME_CACHE_VOLUME_REMOVED, volume_id, volume=volume)
        return True

    def volume_ids(self) -> list[str]:
        """Cached volumeIds."""
        return list(self._volumes)
