"""What a codestream will cost, read from its header, and the checks built on it (in process)."""

from __future__ import annotations

import struct

import imagecodecs
import numpy as np
import pytest

from imageloader import Limits, limits
from imageloader.decode import worker
from imageloader.decode.params import DecodeOptions, PixelParams
from imageloader.decode.syntaxes import Family, header_problem, read_header, rle_segment_count
from imageloader.decode.worker import decode_frame, frame_bytes
from imageloader.errors import DecodeError, ImageTooLargeError

from . import craft

J2K = "1.2.840.10008.1.2.4.90"
JPEG = "1.2.840.10008.1.2.4.50"
JPEG_LS = "1.2.840.10008.1.2.4.80"
RLE = "1.2.840.10008.1.2.5"
NATIVE = "1.2.840.10008.1.2.1"


def grey(uid: str, rows: int, columns: int, bits: int = 16) -> PixelParams:
    return PixelParams(uid, rows, columns, 1, bits, bits, 0, "MONOCHROME2")


def test_defaults_agree() -> None:
    assert Limits().max_frame_bytes == limits.DEFAULT_MAX_FRAME_BYTES == 64 << 20
    assert worker.DEFAULT_MAX_FRAME_BYTES == limits.DEFAULT_MAX_FRAME_BYTES
    assert Limits().max_frame_pixels == worker.DEFAULT_MAX_FRAME_PIXELS == 1 << 28


# -- reading the cost ------------------------------------------------------------------------


def test_j2k_header_gives_components_tiles_levels_and_bytes() -> None:
    info = read_header(craft.j2k(4096, 4096, 16384, 16), Family.JPEG2000)
    assert info is not None
    assert (info.rows, info.columns, info.components, info.bits) == (4096, 4096, 16384, 16)
    assert info.frame_bytes == 4096 * 4096 * 16384 * 2
    tiled = read_header(craft.j2k(255, 257, 3, 8, tile=(1, 1), levels=0), Family.JPEG2000)
    assert tiled is not None and tiled.tiles == 255 * 257 and tiled.levels == 0
    assert tiled.decode_bytes == 255 * 257 * 3 + (tiled.tiles - 1) * (8192 + 3 * 1536)
    levels = read_header(craft.j2k(64, 64, levels=7), Family.JPEG2000)
    assert levels is not None and levels.levels == 7 and levels.tiles == 1
    assert levels.decode_bytes == levels.frame_bytes == 64 * 64 * 2


def test_j2k_widest_component_counts() -> None:
    stream = bytearray(craft.j2k(64, 64, 3, 8))
    stream[4 + 38 + 3 * 2] = 23  # the third component: 24-bit samples
    info = read_header(bytes(stream), Family.JPEG2000)
    assert info is not None and info.precision == 8 and info.bits == 24
    assert info.frame_bytes == 64 * 64 * 3 * 4


def test_real_codestreams_read_as_before() -> None:
    image = np.zeros((48, 40, 3), np.uint8)
    j2k = read_header(imagecodecs.jpeg2k_encode(image, codecformat="J2K"), Family.JPEG2000)
    assert j2k is not None and (j2k.rows, j2k.columns, j2k.components, j2k.tiles) == (48, 40, 3, 1)
    assert j2k.levels >= 1 and j2k.frame_bytes == 48 * 40 * 3
    ht = read_header(imagecodecs.htj2k_encode(image[:, :, 0]), Family.HTJ2K)
    assert ht is not None and ht.family is Family.HTJ2K and ht.components == 1
    ls = read_header(imagecodecs.jpegls_encode(image[:, :, 0].astype(np.uint16)), Family.JPEG_LS)
    assert ls is not None and (ls.rows, ls.columns, ls.bits) == (48, 40, 16)
    for stream, family in [
        (imagecodecs.htj2k_encode(image[:, :, 0]), Family.HTJ2K),
        (imagecodecs.jpeg2k_encode(image, codecformat="JP2"), Family.JPEG2000),
        (imagecodecs.jpegls_encode(image), Family.JPEG_LS),
        (imagecodecs.jpeg8_encode(image), Family.JPEG),
    ]:
        assert header_problem(stream, family) is None


def test_jpeg_ls_oversize_dimensions_replace_a_zero_size() -> None:
    info = read_header(craft.jpeg_ls(0, 0, 1, 16, oversize=(70000, 5)), Family.JPEG_LS)
    assert info is not None and (info.rows, info.columns) == (70000, 5)
    # The segment may come before the frame header too.
    stream = craft.jpeg_ls(0, 0, 1, 16, oversize=(70000, 5))
    sof, lse, sos = stream.index(b"\xff\xf7"), stream.index(b"\xff\xf8"), stream.index(b"\xff\xda")
    swapped = stream[:sof] + stream[lse:sos] + stream[sof:lse] + stream[sos:]
    first = read_header(swapped, Family.JPEG_LS)
    assert first is not None and (first.rows, first.columns) == (70000, 5)
    assert header_problem(swapped, Family.JPEG_LS) is None
    plain = read_header(craft.jpeg_ls(300, 200, 1, 12), Family.JPEG_LS)
    assert plain is not None and (plain.rows, plain.columns, plain.bits) == (300, 200, 12)


def test_rle_segment_count() -> None:
    assert rle_segment_count(craft.rle(3, 8)) == 3
    assert rle_segment_count(b"\x01") is None


# -- structure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "problem"),
    [
        (craft.j2k(4096, 4096, tile=(16, 16)), "65536 tiles"),
        (craft.j2k(64, 64, levels=33), "33 JPEG 2000 decomposition levels"),
        (craft.jpeg(64, 64, precision=9), "9-bit samples"),
        (craft.jpeg(64, 64, precision=16, sof=0xC1), "16-bit samples"),
        (craft.jpeg_ls(64, 64, 1, 17), "17-bit samples"),
        (craft.jpeg_ls(64, 64, 1, 1), "1-bit samples"),
    ],
)
def test_header_problems(stream: bytes, problem: str) -> None:
    family = read_header(stream, Family.JPEG2000 if stream[:2] == b"\xff\x4f" else Family.JPEG)
    assert family is not None
    found = header_problem(stream, family.family)
    assert found is not None and problem in found


def test_j2k_coding_style_segment_checks() -> None:
    stream = bytearray(craft.j2k(64, 64, levels=5))
    cod = stream.index(b"\xff\x52")
    stream[cod + 4 + 6] = 9  # code-block width exponent 2^11
    assert "code-block" in (header_problem(bytes(stream), Family.JPEG2000) or "")
    stream = bytearray(craft.j2k(64, 64, levels=5))
    stream[cod + 4] = 1  # precincts announced, none given
    assert "coding style segment" in (header_problem(bytes(stream), Family.JPEG2000) or "")


def test_jpeg_ls_oversize_segment_length_is_checked() -> None:
    stream = craft.jpeg_ls(0, 0, 1, 16, oversize=(10, 10))
    lse = stream.index(b"\xff\xf8")
    broken = stream[: lse + 5] + b"\x05" + stream[lse + 6 :]  # Wxy 5 (2 to 4 allowed)
    assert "oversize-dimension" in (header_problem(broken, Family.JPEG_LS) or "")


def test_second_frame_header_is_refused() -> None:
    stream = craft.jpeg(8, 8)
    sof = stream.index(b"\xff\xc0")
    length = struct.unpack(">H", stream[sof + 2 : sof + 4])[0]
    doubled = (
        stream[: sof + 2 + length] + stream[sof : sof + 2 + length] + stream[sof + 2 + length :]
    )
    assert header_problem(doubled, Family.JPEG) == "a second JPEG frame header"


# -- the worker's checks --------------------------------------------------------------------


def test_callers_that_pass_no_byte_limit_get_the_default() -> None:
    params = grey(NATIVE, 8192, 8192)  # 128 MiB of 16-bit samples
    with pytest.raises(ImageTooLargeError, match="max_frame_bytes"):
        decode_frame(b"", params, DecodeOptions(), "big", 1 << 28)
    # A caller's larger limit lets it through to the data check.
    with pytest.raises(DecodeError, match="pixel module needs"):
        decode_frame(b"", params, DecodeOptions(), "big", 1 << 28, 256 << 20)


def test_frame_bytes_counts_the_pixels_handed_back() -> None:
    ct = PixelParams(NATIVE, 512, 512, 1, 16, 12, 1, "MONOCHROME2", 0, 1.0, -1024.0, "CT")
    assert frame_bytes(ct) == 512 * 512 * 2  # int16 after the LUT
    pet = PixelParams(NATIVE, 512, 512, 1, 8, 8, 0, "MONOCHROME2", 0, 0.37, 0.0, "PT")
    assert frame_bytes(pet) == 512 * 512 * 4  # float32
    assert frame_bytes(pet, DecodeOptions(prescale=False)) == 512 * 512
    rgb = PixelParams(JPEG, 100, 100, 3, 8, 8, 0, "YBR_FULL_422")
    assert frame_bytes(rgb) == 100 * 100 * 3
    assert frame_bytes(rgb, DecodeOptions(use_rgba=True)) == 100 * 100 * 4
    palette = PixelParams(NATIVE, 100, 100, 1, 16, 16, 0, "PALETTE COLOR")
    assert frame_bytes(palette) == 100 * 100 * 3
    wide = PixelParams(NATIVE, 100, 100, 1, 32, 32, 0, "MONOCHROME2", 0, 2.0, 0.0, "OT")
    assert frame_bytes(wide) == 100 * 100 * 4


def test_header_cost_is_checked_before_the_codec() -> None:
    # The pixel module is small enough; the header's 16,384 components are not.
    stream = craft.j2k(256, 256, 16384, 16)
    with pytest.raises(ImageTooLargeError, match="16384 16-bit components"):
        decode_frame(stream, grey(J2K, 256, 256), image_id="j2k")
    # A caller's limit is honoured too.
    stream = craft.j2k(256, 256, 1, 16)
    with pytest.raises(ImageTooLargeError, match="max_frame_bytes"):
        decode_frame(stream, grey(J2K, 256, 256), DecodeOptions(), "j2k", 1 << 28, 1000)


def test_components_and_bits_must_fit_the_pixel_module() -> None:
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(
        DecodeError, match="3 components but the pixel module says SamplesPerPixel 1"
    ):
        decode_frame(imagecodecs.jpeg8_encode(image), grey(JPEG, 16, 16, 8), image_id="j")
    deep = imagecodecs.jpeg2k_encode(np.zeros((16, 16), np.uint16), codecformat="J2K")
    with pytest.raises(
        DecodeError, match="16-bit samples but the pixel module says BitsAllocated 8"
    ):
        decode_frame(deep, grey(J2K, 16, 16, 8), image_id="j")
    # Narrower samples in a wider allocation are fine.
    shallow = imagecodecs.jpeg2k_encode(np.full((16, 16), 7, np.uint8), codecformat="J2K")
    assert int(decode_frame(shallow, grey(J2K, 16, 16, 16)).pixels.max()) == 7


def test_rle_segments_must_match_the_pixel_module() -> None:
    with pytest.raises(DecodeError, match="names 2 segments but the pixel module needs 1"):
        decode_frame(craft.rle(2, 64), grey(RLE, 8, 8, 8), image_id="rle")
    params = PixelParams(RLE, 8, 4, 3, 16, 16, 0, "RGB")
    with pytest.raises(DecodeError, match="names 1 segments but the pixel module needs 6"):
        decode_frame(craft.rle(1, 64), params, image_id="rle")
    # One segment of 8 x 8 replicate-run bytes is a frame.
    frame = decode_frame(craft.rle(1, 0) + b"\xc1\x05", grey(RLE, 8, 8, 8))
    assert frame.pixels.shape == (8, 8) and int(frame.pixels.max()) == 5
