"""``wadors:`` against a local fault server: every failure is typed, nothing is left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from imageloader import ImageLoader
from imageloader.dicom.wadors import WadoRsLoader
from imageloader.errors import (
    FetchError,
    InvalidImageIdError,
    LoadTimeoutError,
    NotFoundError,
    ResponseFormatError,
    TruncatedResponseError,
)
from imageloader.http import HttpOptions

from .fakeweb import fake_dicomweb

FAST = HttpOptions(retries=1, backoff_base=0.01, backoff_max=0.02, read_timeout=1.0)
CT = get_testdata_file("CT_small.dcm")
MULTIFRAME = get_testdata_file("emri_small.dcm")  # 10 frames, 64x64 16-bit


@pytest.fixture
async def loader() -> AsyncIterator[ImageLoader]:
    async with ImageLoader(max_web_workers=0, http=FAST) as il:
        yield il


def assert_clean(loader: ImageLoader) -> None:
    assert loader.in_flight == 0
    assert loader.request_pool.running() == 0 and loader.request_pool.waiting() == 0
    wadors = loader.builtin_loader("wadors")
    assert isinstance(wadors, WadoRsLoader)
    assert not wadors.batcher._instances and not wadors.batcher._tasks


async def _reference(loader: ImageLoader, path: str, frame: int = 1) -> np.ndarray:
    return (await loader.load_image(f"dicomfile:{path}?frame={frame}")).pixel_data


async def test_frames_load_and_metadata_is_fetched_once(loader: ImageLoader) -> None:
    async with fake_dicomweb(MULTIFRAME) as web:
        ids = [web.image_id(n) for n in range(1, 11)]
        images = await loader.load_and_cache_images(ids)
        for n, image in enumerate(images, start=1):
            np.testing.assert_array_equal(image.pixel_data, await _reference(loader, MULTIFRAME, n))
        assert web.hits["metadata"] == 1
        # Frames of one instance went out together, not one request each.
        assert web.hits["frames"] < 10
        assert sorted(int(n) for r in web.frame_requests for n in r.split(",")) == list(
            range(1, 11)
        )
    assert_clean(loader)


async def test_batching_can_be_switched_off(loader: ImageLoader) -> None:
    from imageloader.dicom.wadors import wadors_options

    wadors_options(loader).batch_frames = False
    async with fake_dicomweb(MULTIFRAME) as web:
        await loader.load_and_cache_images([web.image_id(n) for n in range(1, 11)])
        assert web.hits["frames"] == 10 and all("," not in r for r in web.frame_requests)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("no-closing-boundary", TruncatedResponseError),
        ("wrong-content-type", ResponseFormatError),
        ("wrong-boundary", ResponseFormatError),
        ("cut", TruncatedResponseError),
    ],
)
async def test_malformed_responses_are_typed(
    loader: ImageLoader, fault: str, error: type[Exception]
) -> None:
    async with fake_dicomweb(CT) as web:
        web.fault = fault
        with pytest.raises(error) as info:
            await loader.load_and_cache_image(web.image_id())
        assert getattr(info.value, "image_id", None) == web.image_id()
        assert web.image_id() not in loader.cache
    assert_clean(loader)


async def test_a_frame_at_an_odd_offset_and_a_single_part_body_decode(loader: ImageLoader) -> None:
    want = await _reference(loader, CT)
    for fault in ("odd-offset", "single-part"):
        async with fake_dicomweb(CT) as web:
            web.fault = fault
            image = await loader.load_image(web.image_id())
            np.testing.assert_array_equal(image.pixel_data, want)


@pytest.mark.parametrize(("status", "error"), [(404, NotFoundError), (401, FetchError)])
async def test_statuses(loader: ImageLoader, status: int, error: type[FetchError]) -> None:
    async with fake_dicomweb(CT) as web:
        web.status = status
        with pytest.raises(error) as info:
            await loader.load_image(web.image_id())
        assert info.value.status == status and info.value.image_id == web.image_id()
        assert web.hits["frames"] == 1  # never retried
    assert_clean(loader)


async def test_a_500_then_success_is_retried(loader: ImageLoader) -> None:
    async with fake_dicomweb(CT) as web:
        web.status = 503

        async def recover() -> None:
            await web.requested.wait()
            web.status = 200

        task = asyncio.create_task(recover())
        image = await loader.load_image(web.image_id())
        await task
        assert image.rows == 128 and web.hits["frames"] == 2


async def test_a_slow_body_times_out(loader: ImageLoader) -> None:
    async with fake_dicomweb(CT) as web:
        web.fault = "slow"
        with pytest.raises(LoadTimeoutError):
            await asyncio.wait_for(loader.load_image(web.image_id()), 10)
    assert_clean(loader)


async def test_cancelling_mid_body_aborts_the_request(loader: ImageLoader) -> None:
    async with fake_dicomweb(CT) as web:
        web.fault = "slow"
        task = asyncio.create_task(loader.load_and_cache_image(web.image_id()))
        await web.requested.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        session = await loader.http.session()
        assert session.connector is not None and len(session.connector._acquired) == 0
        assert web.image_id() not in loader.cache
    assert_clean(loader)


def test_malformed_image_ids() -> None:
    from imageloader.dicom.wadors import parse_wadors_id

    for bad in (
        "wadors:http://h/studies/1/series/2/instances/3",
        "wadors:http://h/studies/1/series/2/instances/3/frames/0",
        "wadors:ftp://h/studies/1/series/2/instances/3/frames/1",
        "wadors:not a url",
    ):
        with pytest.raises(InvalidImageIdError):
            parse_wadors_id(bad)
    ref = parse_wadors_id("wadors:https://pacs/dicom-web/studies/1/series/2/instances/3/frames/7")
    assert (ref.base, ref.study, ref.series, ref.instance, ref.frame) == (
        "https://pacs/dicom-web",
        "1",
        "2",
        "3",
        7,
    )


async def test_metadata_provided_by_the_caller_is_used(loader: ImageLoader) -> None:
    import pydicom

    from imageloader.dicom.modules import metadata_modules

    modules = metadata_modules(pydicom.dcmread(CT), frame=1)
    async with fake_dicomweb(CT) as web:
        provided = {web.image_id(): modules}
        loader.metadata.add_provider(lambda kind, image_id: provided.get(image_id, {}).get(kind))
        image = await loader.load_image(web.image_id())
        np.testing.assert_array_equal(image.pixel_data, await _reference(loader, CT))
        assert web.hits["metadata"] == 0  # nothing asked of the server but the frame
