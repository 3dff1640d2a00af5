"""``wadors:`` against a local fault server: every failure is typed, nothing is left behind.

Also: a frame past an instance's end is a NotFoundError naming the range, and frames a
server refuses (400/406/415/500) come from the instance itself, fetched once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
from aiohttp import web
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
from imageloader.limits import Limits
from tests.servers import instance_json, serve

from .fakeweb import BOUNDARY, SERIES, SOP, STUDY, FakeDicomWeb, build_app, fake_dicomweb
from .fakeweb import _frames as fake_frames

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


# -- frames that do not exist ---------------------------------------------------------------


@pytest.mark.parametrize(("path", "frame", "count"), [(CT, 2, 1), (MULTIFRAME, 11, 10)])
async def test_a_frame_past_the_end_is_not_found_naming_the_range(
    loader: ImageLoader, path: str, frame: int, count: int
) -> None:
    async with fake_dicomweb(path) as web:
        image_id = web.image_id(frame)
        with pytest.raises(NotFoundError) as info:
            await loader.load_and_cache_image(image_id)
        assert f"frame {frame} of {count} does not exist" in str(info.value)
        assert info.value.image_id == image_id
        # load_metadata says the same, and the instance's frame count is remembered:
        # no second metadata request, and never a frames request.
        with pytest.raises(NotFoundError, match=f"frame {frame} of {count} does not exist"):
            await loader.load_metadata([image_id])
        assert web.hits["metadata"] == 1 and web.hits["frames"] == 0
        # The frames that exist still load.
        await loader.load_image(web.image_id(count))
        assert image_id not in loader.cache
    assert_clean(loader)


# -- servers that refuse frames ---------------------------------------------------------------

PART10_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@dataclass
class RefusingDicomWeb(FakeDicomWeb):
    """fakeweb's server whose frames requests answer ``status``, serving the instance too."""

    instance_status: int = 200
    instance_body: bytes = b""
    instance_accepts: list[str] = field(default_factory=list)

    @property
    def instance_url(self) -> str:
        return self.image_id(1).removeprefix("wadors:").rsplit("/frames/", 1)[0]


@asynccontextmanager
async def refusing_dicomweb(path: str, status: int = 400) -> AsyncIterator[RefusingDicomWeb]:
    ds = pydicom.dcmread(path)
    meta = instance_json(ds)
    meta["0020000D"] = {"vr": "UI", "Value": [STUDY]}
    meta["0020000E"] = {"vr": "UI", "Value": [SERIES]}
    meta["00080018"] = {"vr": "UI", "Value": [SOP]}
    state = RefusingDicomWeb(
        None,  # type: ignore[arg-type]
        fake_frames(ds),
        str(ds.file_meta.TransferSyntaxUID),
        meta,
        status=status,
        instance_body=await asyncio.to_thread(Path(path).read_bytes),
    )
    app = build_app(state)

    async def instance(request: web.Request) -> web.Response:
        state.hits["instance"] += 1
        state.instance_accepts.append(request.headers.get("Accept", ""))
        if state.instance_status != 200:
            return web.Response(status=state.instance_status, text="no")
        if state.fault == "instance-html":
            return web.Response(body=b"<html>login</html>", content_type="text/html")
        body = (
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + state.instance_body
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
        ctype = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
        return web.Response(body=body, headers={"Content-Type": ctype})

    app.router.add_get(f"/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{SOP}", instance)
    async with serve(app) as server:
        state.server = server
        yield state


def part10_objects(loader: ImageLoader) -> int:
    wadors = loader.builtin_loader("wadors")
    assert isinstance(wadors, WadoRsLoader)
    return len(wadors.refused.objects)


@pytest.mark.parametrize("status", [400, 406, 415, 500])
@pytest.mark.parametrize("batch", [True, False])
async def test_refused_frames_come_from_the_instance_fetched_once(
    loader: ImageLoader, status: int, batch: bool
) -> None:
    from imageloader.dicom.wadors import wadors_options

    wadors_options(loader).batch_frames = batch
    async with refusing_dicomweb(MULTIFRAME, status) as web:
        ids = [web.image_id(n) for n in range(1, 11)]
        images = await loader.load_and_cache_images(ids)
        for n, image in enumerate(images, start=1):
            np.testing.assert_array_equal(image.pixel_data, await _reference(loader, MULTIFRAME, n))
            assert image.pixel_data.dtype == (await _reference(loader, MULTIFRAME, n)).dtype
        assert web.hits["instance"] == 1, web.hits
        assert web.instance_accepts == [PART10_ACCEPT]
        assert web.hits["metadata"] == 1
        # Each frames request went out with the stored syntax, then explicit little
        # endian (a 500 is retried once more on the last Accept), and no more after.
        per_request = 3 if status == 500 else 2
        requests = web.hits["frames"]
        if batch:
            assert requests == per_request, web.frame_requests
        else:  # one frame per request: those sent before the first refusal came back
            assert per_request <= requests <= 10 * per_request, web.frame_requests
        assert part10_objects(loader) == 1

        # Later frames go straight to the instance, held while its frames are cached...
        again = await loader.load_image(ids[4])
        np.testing.assert_array_equal(again.pixel_data, images[4].pixel_data)
        assert web.hits["frames"] == requests and web.hits["instance"] == 1
        # ...and fetched again (never its frames) once they have all left the cache.
        loader.cache.purge()
        assert part10_objects(loader) == 0
        await loader.load_and_cache_image(ids[7])
        assert web.hits["frames"] == requests and web.hits["instance"] == 2
        # A frame past its end is not found, from the instance's own count.
        with pytest.raises(NotFoundError, match="frame 11 of 10 does not exist"):
            await loader.load_image(web.image_id(11))
        assert web.hits["instance"] == 2
    assert_clean(loader)


async def test_a_refusal_while_frames_wait_sends_them_to_the_instance() -> None:
    # One frame per request, one request per instance at a time: the other frames are
    # still waiting when the first request is refused, and are never asked for.
    from imageloader.dicom.wadors import wadors_options

    one = Limits(max_frames_per_request=1)
    async with (
        ImageLoader(max_web_workers=0, http=FAST, limits=one) as loader,
        refusing_dicomweb(MULTIFRAME) as web,
    ):
        wadors_options(loader).requests_per_instance = 1
        ids = [web.image_id(n) for n in range(1, 11)]
        images = await loader.load_and_cache_images(ids)
        assert web.frame_requests == ["1", "1"]  # stored syntax, then explicit LE
        assert web.hits["instance"] == 1
        for n, image in enumerate(images, start=1):
            np.testing.assert_array_equal(image.pixel_data, await _reference(loader, MULTIFRAME, n))
        assert_clean(loader)


async def test_a_404_for_frames_does_not_fall_back(loader: ImageLoader) -> None:
    async with refusing_dicomweb(CT, 404) as web:
        with pytest.raises(NotFoundError) as info:
            await loader.load_image(web.image_id())
        assert info.value.status == 404 and info.value.image_id == web.image_id()
        assert "/frames/1" in str(info.value) and "refused" not in str(info.value)
        assert web.hits["frames"] == 1 and web.hits["instance"] == 0
        # Nothing remembered: the next load asks for frames again.
        web.status = 200
        image = await loader.load_image(web.image_id())
        np.testing.assert_array_equal(image.pixel_data, await _reference(loader, CT))
        assert web.hits["frames"] == 2 and web.hits["instance"] == 0
    assert_clean(loader)


@pytest.mark.parametrize(
    ("instance_status", "fault", "error", "status"),
    [
        (500, "", FetchError, 500),
        # The frames exist (the server refused them): a missing instance route is a
        # failed fetch, not a 404 a service would pass on as "no such image".
        (404, "", FetchError, 404),
        (200, "instance-html", ResponseFormatError, None),
    ],
)
async def test_a_failed_fallback_names_the_image_and_the_refused_frames(
    loader: ImageLoader,
    instance_status: int,
    fault: str,
    error: type[FetchError],
    status: int | None,
) -> None:
    async with refusing_dicomweb(MULTIFRAME, 415) as web:
        web.instance_status, web.fault = instance_status, fault
        ids = [web.image_id(n) for n in (1, 2, 3)]
        results = await loader.load_and_cache_images(ids, return_exceptions=True)
        for image_id, result in zip(ids, results, strict=True):
            assert type(result) is error, result
            assert result.image_id == image_id and result.status == status
            message = str(result)
            assert message.endswith(f"[imageId: {image_id}]"), message
            assert "the instance was fetched because its frames were refused" in message
            assert "(HTTP 415)" in message and "/frames/" in message, message
            if status is not None:
                assert f"(HTTP {status}) from {web.instance_url}" in message
        # One instance request for the three frames (a 500 is retried once).
        assert web.hits["instance"] == (2 if instance_status == 500 else 1)
        assert not any(image_id in loader.cache for image_id in ids)
        assert part10_objects(loader) == 0
    assert_clean(loader)


async def test_closing_the_loader_drops_the_instances_held() -> None:
    async with refusing_dicomweb(MULTIFRAME) as web:
        async with ImageLoader(max_web_workers=0, http=FAST) as loader:
            await loader.load_and_cache_images([web.image_id(n) for n in (1, 2)])
            wadors = loader.builtin_loader("wadors")
            assert isinstance(wadors, WadoRsLoader)
            assert len(wadors.refused.objects) == 1
        assert len(wadors.refused.objects) == 0
