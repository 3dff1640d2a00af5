"""Volumes from dicomfile: series: geometry, streaming, views, cancellation, cache accounting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from imageloader import ImageLoader
from imageloader import events as ev
from imageloader.errors import ImageTooLargeError, LoadFailedError
from imageloader.limits import Limits
from tests.support.encoders import fresh_uids, quiet

SLICES = 12


def write_series(folder: Path, count: int = SLICES, spacing: float = 2.5) -> list[Path]:
    """CT slices with distinct pixels, written in scrambled order of position."""
    with quiet():
        source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    paths = []
    order = list(range(count))
    order = order[1::2] + order[::2]  # files on disk not in scan order
    for index in order:
        ds = source.copy()
        fresh_uids(ds, f"volume-slice-{index}")
        pixels = ds.pixel_array.astype(np.int16) + np.int16(index * 7)
        ds.PixelData = pixels.tobytes()
        ds.ImagePositionPatient = [-10.0, -20.0, 100.0 - index * spacing]  # descending z
        ds.InstanceNumber = index + 1
        path = folder / f"slice-{index:03d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths


@pytest.fixture
def series(tmp_path: Path) -> list[str]:
    return [f"dicomfile:{p}" for p in write_series(tmp_path)]


@pytest.fixture
async def loader() -> AsyncIterator[ImageLoader]:
    async with ImageLoader(max_web_workers=2) as il:
        yield il


async def test_volume_equals_the_stack_of_its_images(
    loader: ImageLoader, series: list[str]
) -> None:
    progress: list[int] = []
    loader.events.on(ev.IMAGE_LOAD_PROGRESS, lambda e: progress.append(e.detail["loaded"]))
    volume = await loader.create_and_cache_volume("ct-volume", series)
    assert volume.dimensions == (128, 128, SLICES)
    assert volume.data.dtype == np.int16  # the slices' dtype, not float32 (issue 12)
    await asyncio.wait_for(volume.loaded(), 60)
    assert progress == list(range(1, SLICES + 1))
    # Scan order: lowest z first (the files were written highest z first, shuffled).
    zs = [
        loader.metadata.get("imagePlaneModule", i).image_position_patient[2]
        for i in volume.image_ids
    ]
    assert zs == sorted(zs)
    assert volume.origin == (-10.0, -20.0, min(zs))
    assert volume.spacing == (pytest.approx(0.661468), pytest.approx(0.661468), 2.5)
    async with ImageLoader(max_web_workers=0) as fresh:
        stack = np.stack([(await fresh.load_image(i)).pixel_data for i in volume.image_ids])
    assert stack.dtype == volume.data.dtype
    np.testing.assert_array_equal(volume.data, stack)


async def test_volume_events_follow_cornerstone(loader: ImageLoader, series: list[str]) -> None:
    seen: list[tuple[str, int]] = []
    names = (ev.VOLUME_LOADED, ev.IMAGE_LOAD_PROGRESS, ev.IMAGE_VOLUME_LOADING_COMPLETED)
    for name in names:
        loader.events.on(name, lambda e: seen.append((e.name, e.detail.get("loaded", 0))))
    volume = await loader.create_and_cache_volume("events", series)
    # VOLUME_LOADED: the volume is made and cached (Cornerstone's loadVolume promise),
    # before any slice has streamed in.
    assert seen == [(ev.VOLUME_LOADED, 0)]
    await asyncio.wait_for(volume.loaded(), 60)
    assert [name for name, _ in seen] == [
        ev.VOLUME_LOADED,
        *[ev.IMAGE_LOAD_PROGRESS] * SLICES,
        ev.IMAGE_VOLUME_LOADING_COMPLETED,
    ]
    assert seen[-1] == (ev.IMAGE_VOLUME_LOADING_COMPLETED, SLICES)


async def test_slices_are_views_and_bytes_count_once(
    loader: ImageLoader, series: list[str]
) -> None:
    volume = await loader.create_and_cache_volume("v", series)
    await volume.loaded()
    assert loader.cache.size_bytes == volume.size_in_bytes
    for k, image_id in enumerate(volume.image_ids):
        image = loader.cache.get_image(image_id)
        assert image is not None and np.shares_memory(image.pixel_data, volume.data[k])
    assert await loader.load_image(volume.image_ids[3]) is loader.cache.peek(volume.image_ids[3])
    assert loader.cache.remove_volume("v")
    assert loader.cache.size_bytes == 0 and len(loader.cache) == 0


async def test_image_pressure_does_not_evict_a_volume(series: list[str], tmp_path: Path) -> None:
    slice_bytes = 128 * 128 * 2  # int16
    async with ImageLoader(
        max_web_workers=0, max_cache_size_bytes=slice_bytes * (SLICES + 3)
    ) as loader:
        volume = await loader.create_and_cache_volume("v", series)
        await volume.loaded()
        others = [f"dicomfile:{get_testdata_file(n)}" for n in ("MR_small.dcm", "CT_small.dcm")]
        for _ in range(3):
            for image_id in others:
                await loader.load_and_cache_image(image_id)
        assert loader.cache.get_volume("v") is volume
        assert all(i in loader.cache for i in volume.image_ids)


async def test_cancel_loading_stops_what_has_not_run(series: list[str]) -> None:
    async with ImageLoader(max_web_workers=0, request_limits={"prefetch": 1}) as loader:
        two = asyncio.Event()
        loader.events.on(ev.IMAGE_LOAD_PROGRESS, lambda e: e.detail["loaded"] >= 2 and two.set())
        completed: list[object] = []
        loader.events.on(ev.IMAGE_VOLUME_LOADING_COMPLETED, completed.append)
        volume = await loader.create_and_cache_volume("v", series)
        await asyncio.wait_for(two.wait(), 30)
        volume.cancel_loading()
        with pytest.raises(asyncio.CancelledError):
            await volume.loaded()
        assert 2 <= volume.loaded_count < SLICES
        await asyncio.sleep(0.05)
        assert loader.in_flight == 0 and loader.request_pool.running() == 0
        assert not completed  # a cancelled volume never completes (as in Cornerstone)


async def test_failed_slices_are_reported(
    loader: ImageLoader, series: list[str], tmp_path: Path
) -> None:
    broken = Path(series[5].removeprefix("dicomfile:"))
    await loader.load_metadata(series)  # geometry from the intact headers

    def cut() -> None:  # then the pixel data is cut short
        data = broken.read_bytes()
        broken.write_bytes(data[: len(data) - 1000])

    await asyncio.to_thread(cut)
    volume = await loader.create_and_cache_volume("v", series)
    with pytest.raises(LoadFailedError, match="1 of 12 slices failed") as info:
        await volume.loaded()
    assert info.value.image_id == "v"
    assert list(volume.failures) == [series[5]]
    assert volume.loaded_count == SLICES - 1


async def test_volume_limit(series: list[str]) -> None:
    async with ImageLoader(max_web_workers=0, limits=Limits(max_volume_bytes=1000)) as loader:
        with pytest.raises(ImageTooLargeError):
            await loader.create_and_cache_volume("v", series)
        assert loader.cache.volume_ids() == []


async def test_a_finished_volume_leaves_no_closer_behind(
    loader: ImageLoader, series: list[str]
) -> None:
    before = len(loader._closers)
    for k in range(3):
        volume = await loader.create_and_cache_volume(f"v{k}", series)
        await volume.loaded()
        await asyncio.sleep(0)  # the done callback runs
    assert len(loader._closers) == before
