"""The fault matrix: each fault gives a typed error naming its imageId within its timeout,
the other loads in flight still succeed, and nothing is left behind afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from imageloader import Image, ImageLoader, LoadContext
from imageloader.errors import (
    DecodeError,
    FetchError,
    ImageLoaderError,
    LoadTimeoutError,
    NotFoundError,
    ResponseFormatError,
    TruncatedResponseError,
)
from imageloader.http import HttpOptions
from tests.core import pool_tasks

from .faultweb import FaultWeb, fault_web
from .leaks import ProcessAndFdCheck, assert_settled

SOURCE = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")  # JPEG-LS: a real codec decodes
HTTP = HttpOptions(retries=2, backoff_base=0.01, backoff_max=0.02, read_timeout=1.0)

# fault -> the errors it may give (a corrupt codestream may also decode to garbage:
# JPEG-LS has no checksum, so "no error" is allowed there, but never a foreign one).
MATRIX: dict[str, tuple[type[ImageLoaderError], ...]] = {
    "500": (FetchError,),
    "502": (FetchError,),
    "503": (FetchError,),
    "504": (FetchError,),
    "429": (FetchError,),
    "401": (FetchError,),
    "403": (FetchError,),
    "404": (NotFoundError,),
    "reset": (TruncatedResponseError,),
    "no-close": (TruncatedResponseError,),
    "slow": (LoadTimeoutError,),
    "empty": (ResponseFormatError, TruncatedResponseError),
    "corrupt": (DecodeError,),
}


@pytest.fixture
async def loader() -> AsyncIterator[ImageLoader]:
    async with ImageLoader(max_web_workers=2, http=HTTP) as il:
        yield il


async def _load_all(loader: ImageLoader, web: FaultWeb) -> list[Image | ImageLoaderError]:
    return await asyncio.wait_for(
        loader.load_and_cache_images(web.image_ids(), return_exceptions=True), 20
    )


@pytest.mark.parametrize("fault", list(MATRIX))
async def test_one_faulty_frame_among_good_ones(loader: ImageLoader, fault: str) -> None:
    async with fault_web(SOURCE, instances=6) as web:
        web.forced[0] = fault
        results = await _load_all(loader, web)
        bad, good = results[0], results[1:]
        if isinstance(bad, ImageLoaderError):
            assert isinstance(bad, MATRIX[fault]), repr(bad)
            assert bad.image_id == web.image_id(0)
            assert web.image_id(0) not in loader.cache
        else:
            assert fault == "corrupt", f"{fault} loaded without an error"
        assert all(isinstance(r, Image) for r in good), good
        for image in good:
            np.testing.assert_array_equal(image.pixel_data, good[0].pixel_data)
        if fault == "500":
            # Refused as stored; asked once more for explicit VR LE, retried, given up.
            assert web.served_faults[fault] == 1 + 1 + HTTP.retries
        elif fault in ("502", "503", "504", "429"):
            assert web.served_faults[fault] == 1 + HTTP.retries  # retried, then given up
        elif fault.isdigit():
            assert web.served_faults[fault] == 1  # never retried
        await assert_settled(loader)


async def test_wrong_rows_for_the_data_is_a_decode_error(loader: ImageLoader) -> None:
    async with fault_web(get_testdata_file("CT_small.dcm"), instances=3) as web:
        web.metadata_override[1] = {"00280010": {"vr": "US", "Value": [200]}}  # Rows
        web.metadata_override[2] = {"00280100": {"vr": "US", "Value": [8]}}  # BitsAllocated
        results = await _load_all(loader, web)
        assert isinstance(results[0], Image)
        for index in (1, 2):
            assert isinstance(results[index], DecodeError), results[index]
            assert results[index].image_id == web.image_id(index)
        await assert_settled(loader)


async def test_connection_refused_and_dns_failure() -> None:
    async with ImageLoader(max_web_workers=0, http=HTTP) as loader:
        async with fault_web(SOURCE, instances=1) as web:
            image_id = web.image_id(0)
        # The server is gone: its port refuses connections.
        with pytest.raises(FetchError) as info:
            await asyncio.wait_for(loader.load_image(image_id), 10)
        assert info.value.status is None and info.value.image_id == image_id
        dns = "wadors:http://no-such-pacs.invalid/studies/1/series/2/instances/3/frames/1"
        with pytest.raises((FetchError, LoadTimeoutError)) as dns_info:
            await asyncio.wait_for(loader.load_image(dns), 20)
        assert dns_info.value.image_id == dns
        await assert_settled(loader)


async def test_random_faults_never_leak(loader: ImageLoader) -> None:
    before = ProcessAndFdCheck.start()
    async with fault_web(SOURCE, instances=60, fault_rate=0.3) as web:
        results = await asyncio.wait_for(
            loader.load_and_cache_images(web.image_ids(), return_exceptions=True), 60
        )
        assert len(results) == 60 and sum(web.served_faults.values()) > 5
        for image_id, result in zip(web.image_ids(), results, strict=True):
            if isinstance(result, ImageLoaderError):
                assert result.image_id == image_id
        await assert_settled(loader)
    del before  # processes are checked once the loader closes, in the next test


async def _sleepy_decode(image_id: str, ctx: LoadContext) -> Image:
    seconds = float(image_id.rsplit(":", 1)[1])
    await ctx.decode_pool.run(pool_tasks.echo, 0, seconds, request_type=ctx.request_type)
    return Image.from_array(image_id, np.zeros((2, 2), np.uint8))


async def _hanging_decode(image_id: str, ctx: LoadContext) -> Image:
    await ctx.decode_pool.run(pool_tasks.hang)
    raise AssertionError("a hanging decode returned")


async def test_a_worker_killed_mid_decode_fails_only_its_load() -> None:
    check = ProcessAndFdCheck.start()
    async with ImageLoader(max_web_workers=2, builtin_loaders=False) as loader:
        loader.register_image_loader("sleep", _sleepy_decode)
        await loader.decode_pool.warm()
        pids = loader.decode_pool.pids()
        tasks = [asyncio.create_task(loader.load_image(f"sleep:{k}:0.6")) for k in range(2)]
        await asyncio.sleep(0.3)  # both workers are busy now
        os.kill(pids[0], signal.SIGKILL)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, DecodeError)]
        assert len(errors) == 1 and "died" in str(errors[0])
        assert sum(isinstance(r, Image) for r in results) == 1
        # The pool recovers: later decodes succeed on a fresh process.
        assert (await loader.load_image("sleep:again:0.01")).rows == 2
        await assert_settled(loader)
    check.assert_clean()


async def test_a_hanging_decoder_is_killed_at_its_timeout() -> None:
    check = ProcessAndFdCheck.start()
    async with ImageLoader(max_web_workers=1, decode_timeout=0.5, builtin_loaders=False) as loader:
        loader.register_image_loader("hang", _hanging_decode)
        loader.register_image_loader("sleep", _sleepy_decode)
        hung = asyncio.create_task(loader.load_image("hang:1"))
        other = asyncio.create_task(loader.load_image("sleep:x:0.01"))
        with pytest.raises(LoadTimeoutError) as info:
            await asyncio.wait_for(hung, 10)
        assert info.value.image_id == "hang:1"
        assert (await asyncio.wait_for(other, 10)).rows == 2
        await assert_settled(loader)
    check.assert_clean()
