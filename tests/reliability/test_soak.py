"""A bounded soak: many loads with random cancellations, injected faults and a cache
smaller than the working set end with every load settled, no leak, and a stable RSS.

CI runs ``IMAGELOADER_SOAK_LOADS`` loads (default 2,000); ``IMAGELOADER_SOAK_LOADS=20000``
is the full run. The figures are printed (``-s``) for the record.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from imageloader import Image, ImageLoader, RequestType
from imageloader.errors import ImageLoaderError, LoadCancelledError
from imageloader.http import HttpOptions

from .faultweb import fault_web
from .leaks import ProcessAndFdCheck, assert_settled

LOADS = int(os.environ.get("IMAGELOADER_SOAK_LOADS", "2000"))
INSTANCES = 400
FRAME_BYTES = 64 * 64 * 2
pytestmark = pytest.mark.timeout(max(120, LOADS // 20))


def rss_mb(pid: int | None = None) -> float:
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


async def test_soak() -> None:
    rng = random.Random(20261126)
    source = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    check = ProcessAndFdCheck.start()
    outcomes: Counter[str] = Counter()
    misnamed: list[tuple[ImageLoaderError, str]] = []
    rss: list[float] = []
    started = time.perf_counter()
    async with (
        fault_web(source, instances=INSTANCES, fault_rate=0.10) as web,
        ImageLoader(
            max_web_workers=2,
            max_cache_size_bytes=FRAME_BYTES * INSTANCES // 4,  # a quarter of the working set
            http=HttpOptions(retries=1, backoff_base=0.005, backoff_max=0.01, read_timeout=0.5),
        ) as loader,
    ):
        ids = web.image_ids()
        types = list(RequestType)

        async def one() -> None:
            image_id = rng.choice(ids)
            load = loader.load_and_cache_image(
                image_id, request_type=rng.choice(types), priority=rng.randint(0, 3)
            )
            task = asyncio.ensure_future(load)
            roll = rng.random()
            if roll < 0.05:
                await asyncio.sleep(rng.random() * 0.02)
                task.cancel()  # the caller gives up
            elif roll < 0.08:
                await asyncio.sleep(rng.random() * 0.02)
                loader.cancel_load_image(image_id)  # the application cancels the load
            try:
                image = await task
            except asyncio.CancelledError:
                outcomes["cancelled by caller"] += 1
            except LoadCancelledError as exc:
                misnamed.extend([] if exc.image_id == image_id else [(exc, image_id)])
                outcomes["cancel_load_image"] += 1
            except ImageLoaderError as exc:
                misnamed.extend([] if exc.image_id == image_id else [(exc, image_id)])
                outcomes[type(exc).__name__] += 1
            else:
                assert isinstance(image, Image) and image.image_id == image_id
                outcomes["image"] += 1

        batch = 100
        for start in range(0, LOADS, batch):
            await asyncio.gather(*(one() for _ in range(min(batch, LOADS - start))))
            if start % (LOADS // 8 or 1) == 0:
                rss.append(rss_mb())
            assert loader.cache.size_bytes <= loader.cache.max_size_bytes
        await assert_settled(loader)
        workers = [rss_mb(pid) for pid in loader.decode_pool.pids()]
    check.assert_clean()
    elapsed = time.perf_counter() - started
    assert sum(outcomes.values()) == LOADS  # every load settled, one way or another
    assert misnamed == []  # every error names the imageId it concerns
    assert outcomes["image"] > LOADS * 0.7
    assert sum(web.served_faults.values()) > 0
    growth = rss[-1] - rss[len(rss) // 4]
    print(
        f"\nsoak: {LOADS} loads in {elapsed:.1f} s ({LOADS / elapsed:.0f}/s); outcomes "
        f"{dict(outcomes)}; faults served {dict(web.served_faults)}; main RSS "
        f"{rss[0]:.0f}->{rss[-1]:.0f} MB (growth after warm-up {growth:+.1f} MB); "
        f"worker RSS {[round(w) for w in workers]} MB"
    )
    assert growth < 30, rss
