"""The module-level API follows the running event loop: ``asyncio.run`` twice works.

Scripts, notebooks and test suites run many loops; an ImageLoader belongs to one. Each
loop gets its own default loader, made from ``init``'s options and the registrations
made through the module, and closed when the loop shuts down (decode workers and
session included), so nothing is left behind between runs.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import numpy as np
import pytest

import imageloader
from tests.corpus import CORNERSTONE
from tests.processes import worker_children

JPEG_LS = (
    f"dicomfile:{CORNERSTONE}/CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm"
)


async def _ramp(image_id: str, ctx: imageloader.LoadContext) -> imageloader.Image:
    side = int(image_id.removeprefix("ramp:"))
    return imageloader.Image.from_array(image_id, np.arange(side * side).reshape(side, side))


@pytest.fixture(autouse=True)
def _fresh_defaults() -> Iterator[None]:
    yield
    asyncio.run(imageloader.shutdown())


def test_asyncio_run_twice_each_run_gets_a_working_loader_and_leaves_nothing() -> None:
    loaders = []
    for _ in range(3):

        async def load() -> imageloader.Image:
            loaders.append(imageloader.get_default_loader())
            return await imageloader.load_image(JPEG_LS)

        image = asyncio.run(load())  # a compressed frame: decoded in a worker process
        assert image.rows == 512 and image.pixel_data.dtype == np.int16
        # The loop's shutdown closed its loader: no worker process outlives the run.
        assert loaders[-1].closed
        assert not [cmd for cmd in worker_children().values() if "multiprocessing" in cmd]
    assert len({id(loader) for loader in loaders}) == 3
    gc.collect()  # an unclosed session or loader would warn here (warnings are errors)


def test_registrations_and_init_options_carry_over_to_every_loop() -> None:
    imageloader.init(max_web_workers=0, max_cache_size_bytes=1 << 20)  # outside any loop
    imageloader.register_image_loader("ramp", _ramp)
    imageloader.add_metadata_provider(lambda t, i: {"t": t} if i == "ramp:4" else None)

    async def use() -> tuple[int, int, object]:
        loader = imageloader.get_default_loader()
        image = await imageloader.load_and_cache_image("ramp:4")
        return loader.cache.max_size_bytes, image.rows, imageloader.get_metadata("x", "ramp:4")

    assert asyncio.run(use()) == (1 << 20, 4, {"t": "x"})
    assert asyncio.run(use()) == (1 << 20, 4, {"t": "x"})


def test_init_twice_in_one_loop_is_refused_and_shutdown_forgets_everything() -> None:
    async def twice() -> None:
        imageloader.init(max_web_workers=0)
        imageloader.register_image_loader("ramp", _ramp)
        with pytest.raises(RuntimeError, match="already initialised"):
            imageloader.init()
        await imageloader.shutdown()
        with pytest.raises(imageloader.errors.UnknownSchemeError):
            await imageloader.load_image("ramp:2")

    asyncio.run(twice())


def test_a_provider_added_before_the_loader_exists_is_asked_once() -> None:
    calls: list[str] = []

    def provider(module_type: str, image_id: str) -> None:
        calls.append(image_id)

    async def ask() -> None:
        imageloader.add_metadata_provider(provider)  # makes the loop's default loader
        imageloader.get_metadata("x", "ramp:1")

    asyncio.run(ask())
    assert calls == ["ramp:1"]
