"""Decode levels (Cornerstone's ``decodeLevel``): a frame at 1/2ⁿ of its rows and columns.

JPEG 2000 (glymur/OpenJPEG's reduce), HTJ2K (OpenJPH's skipped resolutions) and
JPEG baseline (libjpeg-turbo's scaled IDCT) reduce in the codec; JPEG-LS (no
reduction) decodes in full and is downsampled. Every level is compared with the
full frame block-averaged, the level's size and spacing checked, and the codec
that ran named. Caching: each level under its own key, a cached full-size image
serving a level without a decode, the byte bound shared.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imageloader import ImageLoader, events
from imageloader.decode.reduce import MAX_DECODE_LEVEL, downsample
from imageloader.levels import level_key
from tests.corpus import CORNERSTONE
from tests.support.encoders import make_variants, missing_tools

pytestmark = pytest.mark.timeout(120)

J2K = CORNERSTONE / "CTImage.dcm_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm"
JPEG = CORNERSTONE / "CTImage.dcm_JPEGProcess1TransferSyntax_1.2.840.10008.1.2.4.50.dcm"
JPEG_LS = CORNERSTONE / "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm"
RGB_JPEG = CORNERSTONE / "TestPattern_JPEG-Baseline_YBRFull.dcm"


@pytest.fixture(scope="module")
def htj2k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("htj2k")
    [variant] = make_variants(
        out,
        ct=CORNERSTONE / "CTImage.dcm",
        rgb=CORNERSTONE / "TestPattern_RGB.dcm",
        names={"ct-htj2k-lossless"},
    )
    return variant.path


def block_mean(full: np.ndarray[Any, Any], rows: int, columns: int) -> np.ndarray[Any, Any]:
    return downsample(full.astype(np.float64), rows, columns)


def close_to_downsampled(image: Any, full: Any, level: int, *, tolerance: float) -> None:
    """Same dtype, the level's size, values within ``tolerance`` of the data range
    (mean absolute difference) of the full frame block-averaged, and correlated."""
    rows, columns = -(-full.rows // (1 << level)), -(-full.columns // (1 << level))
    assert image.pixel_data.shape[:2] == (rows, columns) == (image.rows, image.columns)
    assert image.pixel_data.dtype == full.pixel_data.dtype
    assert image.decode_level == level
    assert image.row_pixel_spacing == pytest.approx(full.row_pixel_spacing * full.rows / rows)
    expected = block_mean(full.pixel_data, rows, columns)
    got = image.pixel_data.astype(np.float64)
    span = float(full.pixel_data.max()) - float(full.pixel_data.min())
    assert np.abs(got - expected).mean() <= tolerance * span
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.97
    assert image.min_pixel_value == float(image.pixel_data.min())


async def levels_of(path: Path, *, workers: int = 1) -> tuple[Any, list[Any], list[float]]:
    """The full frame, then levels 1-3 of it (uncached loads), and their decode times."""
    async with ImageLoader(max_web_workers=workers) as loader:
        image_id = f"dicomfile:{path}"
        full = await loader.load_image(image_id)
        images = [await loader.load_image(image_id, decode_level=n) for n in (1, 2, 3)]
    return full, images, [i.decode_time_ms for i in images]


async def test_jpeg2000_reduces_in_the_codec() -> None:
    pytest.importorskip("glymur")
    full, images, _ = await levels_of(J2K)
    for level, image in enumerate(images, 1):
        # OpenJPEG's reduction is the wavelet's low band, not a block mean: close.
        close_to_downsampled(image, full, level, tolerance=0.03)
    # Not a downsampled full decode: the values differ from the block mean.
    assert not np.array_equal(
        images[0].pixel_data, downsample(full.pixel_data, full.rows // 2, full.columns // 2)
    )


async def test_htj2k_reduces_in_the_codec(htj2k: Path) -> None:
    full, images, _ = await levels_of(htj2k)
    for level, image in enumerate(images, 1):
        close_to_downsampled(image, full, level, tolerance=0.03)
    assert not np.array_equal(
        images[1].pixel_data, downsample(full.pixel_data, full.rows // 4, full.columns // 4)
    )


@pytest.mark.parametrize("path", [JPEG, RGB_JPEG], ids=["grey", "ycbcr"])
async def test_jpeg_baseline_uses_the_scaled_idct(path: Path) -> None:
    full, images, _ = await levels_of(path)
    for level, image in enumerate(images, 1):
        close_to_downsampled(image, full, level, tolerance=0.02)
        assert image.color == full.color


async def test_jpeg_ls_decodes_in_full_and_downsamples_exactly() -> None:
    full, images, _ = await levels_of(JPEG_LS)
    for level, image in enumerate(images, 1):
        rows, columns = image.rows, image.columns
        expected = np.rint(block_mean(full.pixel_data, rows, columns)).astype(np.int16)
        np.testing.assert_array_equal(image.pixel_data, expected)
        assert (rows, columns) == (512 >> level, 512 >> level)


async def test_levels_are_cached_apart_and_a_cached_image_serves_them() -> None:
    async with ImageLoader(max_web_workers=1) as loader:
        image_id = f"dicomfile:{JPEG_LS}"
        small = await loader.load_and_cache_image(image_id, decode_level=2)
        assert level_key(image_id, 2) in loader.cache and image_id not in loader.cache
        assert loader.cache.size_bytes == small.size_in_bytes == 128 * 128 * 2
        # The same level again: the cached image itself.
        assert await loader.load_and_cache_image(image_id, decode_level=2) is small
        full = await loader.load_and_cache_image(image_id)
        assert loader.cache.size_bytes == full.size_in_bytes + small.size_in_bytes
        # Level 3 comes from the cached full image: no decode (no worker busy).
        loaded: list[str] = []
        loader.events.on(events.IMAGE_LOADED, lambda e: loaded.append(e.image_id))
        decoded_before = loader.decode_pool.completed
        tiny = await loader.load_and_cache_image(image_id, decode_level=3)
        assert loader.decode_pool.completed == decoded_before
        assert tiny.decode_level == 3 and tiny.decode_time_ms == 0.0 and loaded == [image_id]
        np.testing.assert_array_equal(
            tiny.pixel_data, np.rint(block_mean(full.pixel_data, 64, 64)).astype(np.int16)
        )
        # Every level counts against the one byte bound: a small cache evicts them.
        loader.cache.set_max_size_bytes(full.size_in_bytes)
        assert loader.cache.size_bytes <= full.size_in_bytes


async def test_many_images_at_a_level() -> None:
    ids = [f"dicomfile:{p}" for p in (J2K, JPEG, JPEG_LS)]
    async with ImageLoader(max_web_workers=2) as loader:
        images = await loader.load_and_cache_images(ids, decode_level=1)
        assert [i.rows for i in images] == [256, 256, 256]
        streamed = [i async for i in loader.iter_images(ids, decode_level=2, cache=False)]
        assert sorted(i.rows for i in streamed) == [128, 128, 128]  # type: ignore[union-attr]


@pytest.mark.parametrize("level", [-1, MAX_DECODE_LEVEL + 1, 1.5, True])
async def test_a_bad_level_is_refused(level: Any) -> None:
    async with ImageLoader(max_web_workers=0) as loader:
        with pytest.raises(ValueError, match="decode_level must be an integer"):
            await loader.load_image(f"dicomfile:{JPEG_LS}", decode_level=level)


async def test_in_flight_loads_of_two_levels_are_two_loads() -> None:
    async with ImageLoader(max_web_workers=1) as loader:
        image_id = f"dicomfile:{JPEG_LS}"
        full, half = await asyncio.gather(
            loader.load_image(image_id), loader.load_image(image_id, decode_level=1)
        )
        assert (full.rows, half.rows) == (512, 256)


@pytest.mark.skipif(bool(missing_tools()), reason=f"encoders missing: {missing_tools()}")
async def test_without_glymur_jpeg2000_falls_back_to_downsampling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from imageloader.decode import reduce

    monkeypatch.setattr(reduce, "_glymur_available", lambda: False)
    async with ImageLoader(max_web_workers=0) as loader:  # in this process: the patch holds
        image_id = f"dicomfile:{J2K}"
        full = await loader.load_image(image_id)
        half = await loader.load_image(image_id, decode_level=1)
    expected = np.rint(block_mean(full.pixel_data, 256, 256)).astype(full.pixel_data.dtype)
    np.testing.assert_array_equal(half.pixel_data, expected)


def test_openjph_reductions_that_may_have_wrapped_are_not_used(tmp_path: Path) -> None:
    """Unsigned data beside an edge: OpenJPH's low band undershoots 0 and wraps to
    ~65535. Such a frame is decoded in full and downsampled instead."""
    import imagecodecs
    import pydicom

    from imageloader.decode.reduce import may_have_wrapped
    from tests.support.encoders import quiet

    stored = np.zeros((512, 512), np.uint16)
    stored[100:300, 100:300] = 3000
    assert may_have_wrapped(imagecodecs.htj2k_decode(imagecodecs.htj2k_encode(stored), skipres=2))
    signed = stored.astype(np.int16) - 1000
    assert not may_have_wrapped(
        imagecodecs.htj2k_decode(imagecodecs.htj2k_encode(signed), skipres=2)
    )
    # Through the loader: the level equals the block mean of the full frame.
    with quiet():
        ds = pydicom.dcmread(CORNERSTONE / "CTImage.dcm")
    ds.PixelRepresentation = 0
    ds.PixelData = stored.tobytes()
    ds.RescaleIntercept = -1024
    path = tmp_path / "unsigned.dcm"
    ds.save_as(path, enforce_file_format=True)
    [variant] = make_variants(
        tmp_path / "variants", ct=path, rgb=CORNERSTONE / "TestPattern_RGB.dcm",
        names={"ct-htj2k-lossless"},
    )  # fmt: skip

    async def levels() -> tuple[Any, Any]:
        async with ImageLoader(max_web_workers=0) as loader:
            image_id = f"dicomfile:{variant.path}"
            return await loader.load_image(image_id), await loader.load_image(
                image_id, decode_level=2
            )

    full, small = asyncio.run(levels())
    assert small.pixel_data.dtype == full.pixel_data.dtype == np.int16
    expected = np.rint(block_mean(full.pixel_data, 128, 128)).astype(np.int16)
    np.testing.assert_array_equal(small.pixel_data, expected)
