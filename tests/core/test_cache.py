from __future__ import annotations

import pytest

from imageloader import events as ev
from imageloader.cache import ImageCache
from imageloader.errors import CacheFullError

from .helpers import make_image

IMAGE_BYTES = 4 * 4 * 2  # make_image(): 4x4 uint16


def test_lru_evicts_least_recently_looked_up() -> None:
    cache = ImageCache(3 * IMAGE_BYTES)
    for name in "abc":
        cache.put_image(make_image(name))
    assert cache.size_bytes == 3 * IMAGE_BYTES
    assert cache.get_image("a") is not None  # a is now most recent; b is oldest
    cache.put_image(make_image("d"))
    assert cache.image_ids() == ["c", "a", "d"]
    assert "b" not in cache and len(cache) == 3
    assert cache.size_bytes == 3 * IMAGE_BYTES


def test_hits_and_misses_are_counted_and_peek_is_neutral() -> None:
    cache = ImageCache(1 << 20)
    cache.put_image(make_image("a"))
    cache.get_image("a")
    cache.get_image("a")
    cache.get_image("zzz")
    assert (cache.hits, cache.misses) == (2, 1)
    assert cache.peek("a") is not None
    assert (cache.hits, cache.misses) == (2, 1)


def test_image_larger_than_cache_raises_and_caches_nothing() -> None:
    cache = ImageCache(IMAGE_BYTES * 2)
    cache.put_image(make_image("small"))
    big = make_image("big", size=8)
    with pytest.raises(CacheFullError) as info:
        cache.put_image(big)
    assert info.value.image_id == "big"
    assert cache.image_ids() == ["small"]
    assert cache.size_bytes == IMAGE_BYTES


def test_events_for_add_and_remove() -> None:
    bus = ev.EventBus()
    seen: list[tuple[str, str | None]] = []
    for name in (ev.IMAGE_CACHE_IMAGE_ADDED, ev.IMAGE_CACHE_IMAGE_REMOVED):
        bus.on(name, lambda e: seen.append((e.name, e.image_id)))
    cache = ImageCache(2 * IMAGE_BYTES, bus)
    cache.put_image(make_image("a"))
    cache.put_image(make_image("b"))
    cache.put_image(make_image("c"))  # evicts a
    assert cache.remove("b") is True
    assert cache.remove("b") is False
    cache.purge()
    assert seen == [
        (ev.IMAGE_CACHE_IMAGE_ADDED, "a"),
        (ev.IMAGE_CACHE_IMAGE_ADDED, "b"),
        (ev.IMAGE_CACHE_IMAGE_REMOVED, "a"),
        (ev.IMAGE_CACHE_IMAGE_ADDED, "c"),
        (ev.IMAGE_CACHE_IMAGE_REMOVED, "b"),
        (ev.IMAGE_CACHE_IMAGE_REMOVED, "c"),
    ]
    assert cache.size_bytes == 0 and len(cache) == 0


def test_replacing_an_image_keeps_bytes_exact() -> None:
    cache = ImageCache(1 << 20)
    cache.put_image(make_image("a"))
    cache.put_image(make_image("a", size=8))
    assert cache.size_bytes == 8 * 8 * 2 and len(cache) == 1


def test_shrinking_evicts() -> None:
    cache = ImageCache(4 * IMAGE_BYTES)
    for name in "abcd":
        cache.put_image(make_image(name))
    cache.set_max_size_bytes(2 * IMAGE_BYTES)
    assert cache.image_ids() == ["c", "d"]
    assert cache.max_size_bytes == 2 * IMAGE_BYTES
    with pytest.raises(ValueError, match="max_size_bytes"):
        cache.set_max_size_bytes(-1)


class _Volume:
    def __init__(self, volume_id: str, size: int, image_ids: list[str]) -> None:
        self.volume_id = volume_id
        self.size_in_bytes = size
        self.image_ids = image_ids


def test_volumes_are_not_evicted_by_image_pressure() -> None:
    cache = ImageCache(4 * IMAGE_BYTES)
    cache.put_volume(_Volume("vol", 2 * IMAGE_BYTES, ["v1", "v2"]))
    cache.put_image(make_image("v1"), size_in_bytes=0)  # a view into the volume
    cache.put_image(make_image("a"))
    cache.put_image(make_image("b"))
    cache.put_image(make_image("c"))  # evicts a, not the volume or its views
    assert cache.get_volume("vol") is not None
    assert "a" not in cache and "v1" in cache
    assert cache.size_bytes == 4 * IMAGE_BYTES
    with pytest.raises(CacheFullError):
        cache.put_image(make_image("huge", size=6))  # 72 B > room left beside the volume
    assert cache.remove_volume("vol") is True
    assert "v1" not in cache and cache.size_bytes == 2 * IMAGE_BYTES
