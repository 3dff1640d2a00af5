"""A service that runs for months: 100,000 distinct images through a small cache, flat RSS.

Distinct imageIds are what a long-running service meets (every study is new), and
per-image state that is never forgotten (metadata, parsed objects, event buffers)
shows up only there: this soak loads ``SOAK_IMAGES`` distinct frames (100 multi-frame
files of 1,000 frames) through a 1 MiB cache, directly and through the FastAPI app
served by uvicorn, and fails if RSS grows by more than ``MAX_GROWTH_MIB`` after the
warm-up (the first fifth: caches and the metadata LRU full, allocator settled). The
RSS curve is printed for the record (``-s``).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from imageloader import ImageLoader, Limits
from tests.servers import free_port

from .leaks import assert_settled

SOAK_IMAGES = 100_000
FILES, FRAMES = 100, SOAK_IMAGES // 100
MAX_GROWTH_MIB = 10.0
CACHE_BYTES = 1 << 20
METADATA_BYTES = 8 << 20
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def rss_mib(pid: int | None = None) -> float:
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.fixture(scope="module")
def multiframe_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """``FILES`` multi-frame 8x8 CTs of ``FRAMES`` frames each (distinct content and UIDs)."""
    folder = tmp_path_factory.mktemp("soak-files")
    paths = []
    for index in range(FILES):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.Rows = ds.Columns = 8
        ds.NumberOfFrames = FRAMES
        pixels = (np.arange(FRAMES * 64, dtype=np.int32) * (index + 1)) % 2000
        ds.PixelData = pixels.astype(np.int16).tobytes()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"multiframe-{index:03}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _image_ids(files: list[Path]) -> list[str]:
    return [f"dicomfile:{path}?frame={n}" for path in files for n in range(1, FRAMES + 1)]


def _check_flat(curve: list[tuple[int, float]], label: str) -> None:
    print(f"\n{label}: RSS (MiB) by images loaded:")
    print("  " + ", ".join(f"{n:,}: {mib:.1f}" for n, mib in curve))
    warm = next(mib for n, mib in curve if n >= SOAK_IMAGES // 5)
    growth = max(mib for n, mib in curve if n >= SOAK_IMAGES // 5) - warm
    print(f"  growth after warm-up: {growth:+.1f} MiB")
    assert growth <= MAX_GROWTH_MIB, curve


async def test_rss_is_flat_over_100000_distinct_images_loaded_directly(
    multiframe_files: list[Path],
) -> None:
    ids = _image_ids(multiframe_files)
    assert len(set(ids)) == SOAK_IMAGES
    curve: list[tuple[int, float]] = []
    limits = Limits(max_metadata_bytes=METADATA_BYTES)
    started = time.perf_counter()
    async with ImageLoader(max_cache_size_bytes=CACHE_BYTES, limits=limits) as loader:

        async def leave_after_one() -> None:
            async for _event in loader.events:  # a subscriber that leaves at once
                break

        leaver = asyncio.ensure_future(leave_after_one())
        for start in range(0, SOAK_IMAGES, 1000):
            images = await loader.load_and_cache_images(ids[start : start + 1000])
            assert images[-1].image_id == ids[start + 999]
            if (start + 1000) % 5000 == 0:
                curve.append((start + 1000, rss_mib()))
        await leaver
        await assert_settled(loader)
        assert loader.cache.size_bytes <= CACHE_BYTES
        assert loader.metadata.store.size_bytes <= METADATA_BYTES
        assert loader.events.subscriptions == 0
    elapsed = time.perf_counter() - started
    print(f"\n{SOAK_IMAGES:,} images in {elapsed:.0f} s ({SOAK_IMAGES / elapsed:,.0f}/s)")
    _check_flat(curve, "direct")


APP = """
from fastapi import FastAPI
from imageloader import AccessPolicy, Limits
from imageloader.integrations.fastapi import add_error_handlers, image_router, imageloader_lifespan

app = FastAPI(
    lifespan=imageloader_lifespan(
        access=AccessPolicy(schemes=["dicomfile"], roots=[{root!r}]),
        max_cache_size_bytes={cache},
        limits=Limits(max_metadata_bytes={metadata}),
    )
)
app.include_router(image_router())
add_error_handlers(app)
"""


async def test_rss_is_flat_over_100000_distinct_images_served_by_fastapi(
    multiframe_files: list[Path], tmp_path: Path
) -> None:
    root = str(multiframe_files[0].parent)
    app = APP.format(root=root, cache=CACHE_BYTES, metadata=METADATA_BYTES)
    (tmp_path / "soak_app.py").write_text(textwrap.dedent(app))
    port = free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 - starting it does not wait for it
        [sys.executable, "-m", "uvicorn", "soak_app:app", "--port", str(port), "--log-level",
         "warning", "--no-access-log"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    ids = _image_ids(multiframe_files)
    curve: list[tuple[int, float]] = []
    served = 0
    try:
        connector = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.get(f"{base}/openapi.json") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, "did not start"
                await asyncio.sleep(0.1)
            started = time.perf_counter()
            queue = iter(ids)

            async def client() -> None:
                nonlocal served
                for image_id in queue:
                    url = f"{base}/images/{quote(image_id, safe='')}"
                    async with session.get(url) as response:
                        body = await response.read()
                        assert response.status == 200, (image_id, body[:300])
                        assert body.startswith(b"\x89PNG")
                    served += 1
                    if served % 5000 == 0:
                        curve.append((served, rss_mib(process.pid)))

            await asyncio.gather(*(client() for _ in range(8)))
            elapsed = time.perf_counter() - started
        print(f"\n{served:,} PNGs in {elapsed:.0f} s ({served / elapsed:,.0f}/s)")
        process.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
    assert served == SOAK_IMAGES
    _check_flat(curve, "FastAPI (the uvicorn process)")
