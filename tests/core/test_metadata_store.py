"""The metadata store is an LRU with a byte bound: a service's state stays flat."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from imageloader import ImageLoader, Limits
from imageloader.metadata import ImagePixelModule, MetadataStore


def _pixel(rows: int = 8) -> ImagePixelModule:
    return ImagePixelModule(1, "MONOCHROME2", rows, rows, 16, 12, 11, 0)


def test_least_recently_used_entries_go_first_and_the_bound_holds() -> None:
    store = MetadataStore(max_bytes=20_000)
    for n in range(1_000):
        store.add(f"x:{n}", {"imagePixelModule": _pixel()})
        if n == 5:
            assert store.modules("x:0")  # touched: now the most recently used
        assert store.size_bytes <= 20_000
    assert 10 < len(store) < 1_000
    assert "x:999" in store and "x:998" in store
    assert "x:1" not in store and "x:0" not in store  # x:0 was touched long ago
    assert store("imagePixelModule", "x:999") == _pixel()
    store.clear()
    assert len(store) == 0 and store.size_bytes == 0


def test_arrays_count_at_their_size() -> None:
    store = MetadataStore(max_bytes=1 << 20)
    lut = np.zeros(300_000, np.uint16)  # 600 kB, like a 16-bit palette's lookup tables
    store.add("x:1", {"palette": {"data": lut}})
    assert store.size_bytes > 600_000
    store.add("x:2", {"palette": {"data": lut.copy()}})
    assert "x:1" not in store and len(store) == 1  # one such entry fits, not two


def test_the_newest_entry_stays_even_when_it_alone_is_over_the_bound() -> None:
    store = MetadataStore(max_bytes=10)
    store.add("x:1", {"imagePixelModule": _pixel()})
    store.add("x:2", {"imagePixelModule": _pixel()})
    assert list(store._modules) == ["x:2"]


@pytest.mark.parametrize("bound", [64 << 10, 256 << 10])
async def test_a_loader_holds_metadata_within_its_limit(bound: int) -> None:
    ct = get_testdata_file("CT_small.dcm")
    limits = Limits(max_metadata_bytes=bound)
    async with ImageLoader(
        max_web_workers=0, max_cache_size_bytes=1 << 20, limits=limits
    ) as loader:
        # One file under many distinct imageIds (extra slashes): each its own entry.
        path = str(ct).lstrip("/")
        ids = [f"dicomfile:/{'/' * n}{path}" for n in range(300)]
        for image_id in ids:
            await loader.load_image(image_id)
            assert loader.metadata.store.size_bytes <= bound
        assert 0 < len(loader.metadata.store) < len(ids)
        # A forgotten entry comes back when its image loads again.
        assert ids[0] not in loader.metadata.store
        await loader.load_image(ids[0])
        assert loader.metadata.get("imagePixelModule", ids[0]).rows == 128
