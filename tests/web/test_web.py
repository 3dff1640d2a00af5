"""``http:``, ``https:`` and ``web:`` images end to end, from a local server.

Every expected array is Pillow's own decode of the same bytes (or the array the
image was made from), so the checks are on the loader's conversions and fields.
"""

from __future__ import annotations

import asyncio
import io
import struct
import sys
import warnings
import zlib
from collections.abc import AsyncIterator

import numpy as np
import pytest
from PIL import Image as PILImage

from imageloader import ImageLoader, Limits
from imageloader.decode.codecs import PILLOW_MAX_IMAGE_PIXELS, prepare_pillow
from imageloader.decode.worker import DEFAULT_MAX_FRAME_PIXELS
from imageloader.errors import (
    DecodeError,
    ImageTooLargeError,
    InvalidImageIdError,
    NotFoundError,
)
from imageloader.http import HttpOptions
from imageloader.image import default_window
from imageloader.metadata import (
    GeneralSeriesModule,
    ImagePixelModule,
    ImagePlaneModule,
    ModalityLutModule,
    VoiLutModule,
)
from imageloader.web import decode_web_image
from tests.web.fileserver import FileServer, file_server

pytestmark = pytest.mark.timeout(60)

FAST = HttpOptions(retries=0, read_timeout=5.0)
RNG = np.random.default_rng(7)


def encode(image: PILImage.Image, fmt: str = "PNG", **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def rgb_array(rows: int = 24, columns: int = 32) -> np.ndarray:
    return RNG.integers(0, 256, size=(rows, columns, 3), dtype=np.uint8)


def png_header_only(width: int, height: int, colour_type: int = 2) -> bytes:
    """A PNG whose IHDR claims ``width``×``height`` RGB (or grey: 0) pixels, with a tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
async def server() -> AsyncIterator[FileServer]:
    async with file_server() as state:
        yield state


@pytest.fixture
async def loader() -> AsyncIterator[ImageLoader]:
    async with ImageLoader(max_web_workers=0, http=FAST) as il:
        yield il


async def test_rgb_png_is_interleaved_rgb_with_cornerstone_fields(
    loader: ImageLoader, server: FileServer
) -> None:
    array = rgb_array()
    url = server.add("a.png", encode(PILImage.fromarray(array)), "image/png")
    image = await loader.load_and_cache_image(url)
    assert image.pixel_data.shape == (24, 32, 3) and image.pixel_data.dtype == np.uint8
    np.testing.assert_array_equal(image.pixel_data, array)
    assert (image.rows, image.columns, image.width, image.height) == (24, 32, 32, 24)
    assert image.color and not image.rgba and image.number_of_components == 3
    assert (image.min_pixel_value, image.max_pixel_value) == (0, 255)
    assert (image.window_width, image.window_center) == (256, 128)
    assert (image.row_pixel_spacing, image.column_pixel_spacing) == (1, 1)
    assert (image.slope, image.intercept) == (1, 0)
    assert image.photometric_interpretation == "RGB"
    assert image.size_in_bytes == array.nbytes and image.data_type == "uint8"
    assert loader.cache.get_image(url) is image
    assert image.pixel_data.flags.writeable and image.pixel_data.flags.c_contiguous


async def test_web_prefix_and_url_ids_load_the_same_pixels(
    loader: ImageLoader, server: FileServer
) -> None:
    array = rgb_array()
    url = server.add("b.png", encode(PILImage.fromarray(array)))
    plain, prefixed = await asyncio.gather(loader.load_image(url), loader.load_image(f"web:{url}"))
    np.testing.assert_array_equal(plain.pixel_data, prefixed.pixel_data)
    assert prefixed.image_id == f"web:{url}"


async def test_use_rgba_keeps_alpha(loader: ImageLoader, server: FileServer) -> None:
    rgba = RNG.integers(0, 256, size=(8, 9, 4), dtype=np.uint8)
    url = server.add("alpha.png", encode(PILImage.fromarray(rgba, "RGBA")))
    with_alpha = await loader.load_image(url, use_rgba=True)
    np.testing.assert_array_equal(with_alpha.pixel_data, rgba)
    assert with_alpha.rgba and with_alpha.number_of_components == 4
    without = await loader.load_image(url)
    np.testing.assert_array_equal(without.pixel_data, rgba[:, :, :3])
    assert not without.rgba


async def test_jpeg_matches_pillow(loader: ImageLoader, server: FileServer) -> None:
    body = encode(PILImage.fromarray(rgb_array(40, 48)), "JPEG", quality=90)
    url = server.add("c.jpg", body, "image/jpeg")
    image = await loader.load_image(url)
    np.testing.assert_array_equal(image.pixel_data, np.asarray(PILImage.open(io.BytesIO(body))))


async def test_exif_orientation_is_applied_as_a_browser_does(
    loader: ImageLoader, server: FileServer
) -> None:
    source = PILImage.fromarray(rgb_array(20, 30))
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    url = server.add("rot.jpg", encode(source, "JPEG", exif=exif.tobytes()))
    image = await loader.load_image(url)
    assert (image.rows, image.columns) == (30, 20)


@pytest.mark.parametrize("bits", [8, 16])
async def test_greyscale_png_stays_one_channel_with_its_range(
    loader: ImageLoader, server: FileServer, bits: int
) -> None:
    dtype = np.uint8 if bits == 8 else np.uint16
    array = np.linspace(100, 200 if bits == 8 else 60000, 12 * 16).astype(dtype).reshape(12, 16)
    url = server.add(f"grey{bits}.png", encode(PILImage.fromarray(array)))
    image = await loader.load_image(url)
    assert image.pixel_data.dtype == dtype and image.pixel_data.shape == (12, 16)
    assert image.pixel_data.flags.writeable
    np.testing.assert_array_equal(image.pixel_data, array)
    assert not image.color and image.number_of_components == 1
    lo, hi = float(array.min()), float(array.max())
    assert (image.min_pixel_value, image.max_pixel_value) == (lo, hi)
    assert (image.window_width, image.window_center) == default_window(lo, hi)
    assert image.photometric_interpretation == "MONOCHROME2"
    pixel = loader.metadata.get("imagePixelModule", url)
    assert (pixel.bits_allocated, pixel.samples_per_pixel) == (bits, 1)


async def test_palette_la_and_bilevel_modes_convert(
    loader: ImageLoader, server: FileServer
) -> None:
    array = rgb_array(10, 10)
    palette = PILImage.fromarray(array).quantize(16)
    palette.info["transparency"] = 0
    la = PILImage.fromarray(np.dstack([array[:, :, 0], array[:, :, 1]]), "LA")
    bilevel = PILImage.fromarray(array[:, :, 0] > 127)
    urls = [
        server.add("p.png", encode(palette, transparency=0)),
        server.add("la.png", encode(la)),
        server.add("1.png", encode(bilevel)),
    ]
    p, p_rgba, la_image, one = await asyncio.gather(
        loader.load_image(urls[0]),
        loader.load_image(urls[0], use_rgba=True),
        loader.load_image(urls[1]),
        loader.load_image(urls[2]),
    )
    np.testing.assert_array_equal(p.pixel_data, np.asarray(palette.convert("RGB")))
    alpha = p_rgba.pixel_data[:, :, 3]
    np.testing.assert_array_equal(alpha == 0, np.asarray(palette) == 0)
    grey = np.repeat(array[:, :, :1], 3, axis=2)
    np.testing.assert_array_equal(la_image.pixel_data, grey)
    assert one.pixel_data.dtype == np.uint8 and set(np.unique(one.pixel_data)) <= {0, 255}
    np.testing.assert_array_equal(one.pixel_data == 255, array[:, :, 0] > 127)


async def test_metadata_modules_are_registered(loader: ImageLoader, server: FileServer) -> None:
    url = server.add("m.png", encode(PILImage.fromarray(rgb_array(6, 7))))
    assert loader.metadata.get("imagePixelModule", url) is None
    await loader.load_image(url)
    modules = loader.metadata.modules(url)
    pixel = modules["imagePixelModule"]
    assert isinstance(pixel, ImagePixelModule)
    assert (pixel.rows, pixel.columns, pixel.samples_per_pixel) == (6, 7, 3)
    assert pixel.photometric_interpretation == "RGB" and pixel.bits_allocated == 8
    plane = modules["imagePlaneModule"]
    assert isinstance(plane, ImagePlaneModule)
    assert plane.using_default_values and plane.pixel_spacing == (1.0, 1.0)
    assert (plane.row_pixel_spacing, plane.column_pixel_spacing) == (1.0, 1.0)
    assert modules["generalSeriesModule"] == GeneralSeriesModule(modality="SC")
    assert modules["voiLutModule"] == VoiLutModule(window_center=(128.0,), window_width=(256.0,))
    assert modules["modalityLutModule"] == ModalityLutModule(
        rescale_slope=1.0, rescale_intercept=0.0
    )


async def test_decodes_in_worker_processes(server: FileServer) -> None:
    array = rgb_array()
    url = server.add("w.png", encode(PILImage.fromarray(array)))
    async with ImageLoader(max_web_workers=1, http=FAST) as loader:
        image = await loader.load_image(url)
        assert loader.decode_pool.completed == 1
    np.testing.assert_array_equal(image.pixel_data, array)


# -- failures ---------------------------------------------------------------------------
async def test_a_body_that_is_not_an_image_is_a_decode_error(
    loader: ImageLoader, server: FileServer
) -> None:
    url = server.add("login.png", b"<html>please log in</html>", "text/html")
    with pytest.raises(DecodeError) as info:
        await loader.load_image(url)
    assert info.value.image_id == url
    assert "text/html" in str(info.value)


async def test_truncated_png_is_a_decode_error(loader: ImageLoader, server: FileServer) -> None:
    body = encode(PILImage.fromarray(rgb_array(64, 64)))
    url = server.add("cut.png", body[: len(body) // 2])
    with pytest.raises(DecodeError) as info:
        await loader.load_image(f"web:{url}")
    assert info.value.image_id == f"web:{url}"


async def test_over_the_pixel_limit_is_refused_before_decoding(server: FileServer) -> None:
    url = server.add("big.png", encode(PILImage.fromarray(rgb_array(40, 50))))
    async with ImageLoader(
        max_web_workers=0, http=FAST, limits=Limits(max_frame_pixels=1999)
    ) as il:
        with pytest.raises(ImageTooLargeError) as info:
            await il.load_image(url)
    assert info.value.image_id == url and "limit of 1999 pixels" in str(info.value)


@pytest.mark.parametrize(
    "size",
    [
        (20000, 20000),  # over the limit, under twice it: Pillow only warns, we raise
        (30000, 30000),  # over twice the limit: Pillow's DecompressionBombError
    ],
)
async def test_decompression_bombs_are_refused(
    loader: ImageLoader, server: FileServer, size: tuple[int, int]
) -> None:
    url = server.add(f"bomb{size[0]}.png", png_header_only(*size))
    with pytest.raises(ImageTooLargeError) as info:
        await loader.load_image(url)
    assert info.value.image_id == url


def test_a_decode_changes_no_process_wide_setting() -> None:
    prepare_pillow()  # once per process, before the first decode
    limit, hook, filters = PILImage.MAX_IMAGE_PIXELS, sys.unraisablehook, list(warnings.filters)
    with pytest.raises(ImageTooLargeError):
        decode_web_image(png_header_only(3000, 3000), "web:x", False, 1 << 20)
    with pytest.raises(ImageTooLargeError):
        decode_web_image(png_header_only(30000, 30000), "web:x", False, 1 << 28)
    decode_web_image(encode(PILImage.fromarray(rgb_array())), "web:x", False, 1 << 20)
    assert limit == PILImage.MAX_IMAGE_PIXELS
    assert sys.unraisablehook is hook and warnings.filters == filters


def test_pillows_limit_is_raised_to_ours_once_and_never_lowered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert PILLOW_MAX_IMAGE_PIXELS == Limits().max_frame_pixels == DEFAULT_MAX_FRAME_PIXELS
    setup = prepare_pillow.__wrapped__  # the body, not the once-per-process cache
    for before, after in [
        (89_478_485, PILLOW_MAX_IMAGE_PIXELS),  # Pillow's default
        (None, None),  # switched off by the application: left off
        (1 << 30, 1 << 30),  # higher already
    ]:
        monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", before)
        setup()
        assert after == PILImage.MAX_IMAGE_PIXELS


def test_pillows_default_limit_does_not_refuse_an_image_within_ours() -> None:
    # 9500 x 9500 is over Pillow's default 89,478,485 pixels and under our 2**28
    # (and 90 MB, under a byte limit raised to 128 MiB): refused as truncated (its
    # IDAT is tiny), not as too large.
    png = png_header_only(9500, 9500, colour_type=0)
    with pytest.raises(DecodeError) as info:
        decode_web_image(png, "web:x", False, 1 << 28, 128 << 20)
    assert not isinstance(info.value, ImageTooLargeError)
    # Under the default 64 MiB per frame, the header alone refuses it.
    with pytest.raises(ImageTooLargeError, match="bytes per frame"):
        decode_web_image(png, "web:x", False, 1 << 28)


async def test_not_found_and_bad_ids_are_typed(loader: ImageLoader, server: FileServer) -> None:
    missing = server.url("missing.png")
    with pytest.raises(NotFoundError) as info:
        await loader.load_image(missing)
    assert info.value.image_id == missing
    with pytest.raises(InvalidImageIdError) as bad:
        await loader.load_image("web:ftp://host/a.png")
    assert bad.value.image_id == "web:ftp://host/a.png"
