"""Hostile Part 10 objects in flight do not hold up unrelated loads (in process).

A parse is bounded (``max_parse_seconds``, the read cap, cancellation) and runs in a
thread of its own: six objects of deflated zeros, each a few seconds of CPU, no
longer hold every thread of the loop's default executor (``min(32, CPUs + 4)``: six
on two CPUs), which starved a 10 ms load past 60 s.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from imageloader import ImageLoader
from imageloader.errors import ImageTooLargeError, LoadTimeoutError

from . import craft

pytestmark = pytest.mark.timeout(120)


async def test_hostile_parses_do_not_starve_a_small_load(tmp_path: Path) -> None:
    zeros = craft.deflated_zeros(200 << 20)
    paths = []
    for index in range(6):
        path = tmp_path / f"zeros{index}.dcm"
        path.write_bytes(zeros)
        paths.append(path)
    small = get_testdata_file("CT_small.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom on the zeros: implicit VR found
        async with ImageLoader() as loader:
            started = time.monotonic()
            hostile = [asyncio.create_task(loader.load_image(f"dicomfile:{p}")) for p in paths]
            await asyncio.sleep(0.3)  # all six parsing
            before = time.monotonic()
            image = await loader.load_image(f"dicomfile:{small}")
            took = time.monotonic() - before
            assert image.rows == 128
            assert took < 3, f"a small load took {took:.1f} s behind six hostile parses"
            outcomes = await asyncio.gather(*hostile, return_exceptions=True)
            elapsed = time.monotonic() - started
    assert all(isinstance(o, (ImageTooLargeError, LoadTimeoutError)) for o in outcomes), outcomes
    # Each is stopped by its read cap or the 10 s deadline (six share the GIL).
    assert elapsed < 15
