"""Faults with the real Orthanc: killed mid-prefetch and restarted; idle keep-alive closed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from imageloader import Image, ImageLoader
from imageloader import events as ev
from imageloader.errors import FetchError, ImageLoaderError, TruncatedResponseError
from imageloader.http import HttpOptions
from tests.support.encoders import fresh_uids, quiet
from tests.support.orthanc import OrthancServer

from .leaks import ProcessAndFdCheck, assert_settled

pytestmark = pytest.mark.timeout(120)
HTTP = HttpOptions(retries=2, backoff_base=0.05, backoff_max=0.1, connect_timeout=2)


def _upload_series(server: OrthancServer, folder: Path, count: int) -> list[str]:
    with quiet():
        source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ids = []
    for k in range(count):
        ds = source.copy()
        fresh_uids(ds, f"kill-test-{k}")
        path = folder / f"{k}.dcm"
        ds.save_as(path)
        info = server.upload(path)
        ids.append(
            f"wadors:{server.dicomweb_url}/studies/{info.study_uid}/series/{info.series_uid}"
            f"/instances/{info.sop_uid}/frames/1"
        )
    return ids


async def test_orthanc_killed_mid_prefetch_then_restarted(
    orthanc_factory: Callable[..., OrthancServer], tmp_path: Path
) -> None:
    server = await asyncio.to_thread(orthanc_factory)
    ids = await asyncio.to_thread(_upload_series, server, tmp_path, 30)
    check = ProcessAndFdCheck.start()
    async with ImageLoader(max_web_workers=1, http=HTTP, request_limits={"prefetch": 2}) as loader:
        started = asyncio.Event()
        loaded = 0

        def count(event: ev.Event) -> None:
            nonlocal loaded
            loaded += 1
            if loaded == 5:
                started.set()

        loader.events.on(ev.IMAGE_LOADED, count)
        prefetch = asyncio.create_task(loader.load_and_cache_images(ids, return_exceptions=True))
        await asyncio.wait_for(started.wait(), 30)
        await asyncio.to_thread(server.kill)
        results = await asyncio.wait_for(prefetch, 60)
        failed = [i for i, r in zip(ids, results, strict=True) if isinstance(r, ImageLoaderError)]
        assert 5 <= sum(isinstance(r, Image) for r in results) < 30
        assert failed, "the kill should have failed the loads still to come"
        for image_id, result in zip(ids, results, strict=True):
            if isinstance(result, ImageLoaderError):
                assert isinstance(result, (FetchError, TruncatedResponseError)), result
                assert result.image_id == image_id
        await assert_settled(loader)
        # Back up: the failed images load now, nothing else is fetched again.
        await asyncio.to_thread(server.restart)
        again = await asyncio.wait_for(loader.load_and_cache_images(failed), 60)
        assert all(isinstance(r, Image) for r in again)
        missing = [i for i in ids if i not in loader.cache]
        assert not missing, (len(missing), len(failed), [type(r).__name__ for r in results])
        await assert_settled(loader)
    check.assert_clean()


async def test_a_connection_orthanc_closed_while_idle_is_not_an_error(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    ids = await asyncio.to_thread(_upload_series, orthanc, tmp_path, 3)
    async with ImageLoader(max_web_workers=0, http=HTTP) as loader:
        for image_id in ids:
            assert (await loader.load_image(image_id)).rows == 128
            await asyncio.sleep(1.3)  # past Orthanc's 1 s keep-alive: it closes the socket
        await assert_settled(loader)
