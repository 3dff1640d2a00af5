"""Colour: YBR_FULL(_422) to RGB, planar configuration, palettes, RGBA, wide samples."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from imageloader.decode import color
from imageloader.decode.params import DecodeOptions, Palette, PixelParams
from imageloader.decode.worker import decode_frame

from .dicom_frames import expected_ybr_to_rgb

EXPLICIT_LE = "1.2.840.10008.1.2.1"
RGBA = DecodeOptions(use_rgba=True)


def colour(pi: str, rows: int = 2, columns: int = 4, planar: int = 0, bits: int = 8) -> PixelParams:
    return PixelParams(
        transfer_syntax_uid=EXPLICIT_LE,
        rows=rows,
        columns=columns,
        samples_per_pixel=3,
        bits_allocated=bits,
        bits_stored=bits,
        pixel_representation=0,
        photometric_interpretation=pi,
        planar_configuration=planar,
    )


@pytest.mark.parametrize(
    ("ybr", "rgb"),
    [
        ((128, 128, 128), (128, 128, 128)),  # grey stays grey
        ((0, 128, 128), (0, 0, 0)),
        ((255, 128, 128), (255, 255, 255)),
        ((76, 85, 255), (254, 0, 0)),  # R = 76 + 1.402*127 = 254.05
        ((150, 44, 21), (0, 255, 1)),  # G = 150 + 28.9 + 76.4 = 255.3 -> clamped; B = 1.15
        ((29, 255, 107), (0, 0, 254)),  # R = -0.44 -> 0; G = 0.29; B = 254.04
        ((100, 200, 50), (0, 131, 228)),  # G = 130.93
    ],
)
def test_ybr_full_formula(ybr, rgb) -> None:
    y, cb, cr = ybr
    red = y + 1.402 * (cr - 128)
    green = y - 0.34414 * (cb - 128) - 0.71414 * (cr - 128)
    blue = y + 1.772 * (cb - 128)
    assert rgb == tuple(int(np.clip(np.rint(v), 0, 255)) for v in (red, green, blue))
    got = color.ybr_full_to_rgb(np.array([[ybr]], dtype=np.uint8))
    assert tuple(got[0, 0]) == rgb


def test_ybr_full_matches_the_formula_for_every_input() -> None:
    """All 2**24 (Y, Cb, Cr): the lookup tables reproduce Cornerstone's float64 formula."""
    cb, cr = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    for y in range(0, 256, 16):
        block = np.empty((16, 256, 256, 3), dtype=np.uint8)
        block[..., 0] = np.arange(y, y + 16)[:, None, None]
        block[..., 1] = cb
        block[..., 2] = cr
        np.testing.assert_array_equal(color.ybr_full_to_rgb(block), expected_ybr_to_rgb(block))


def test_ybr_half_way_values_round_to_even() -> None:
    # Y=33, Cb=253: B = 33 + 1.772*125 = 254.5 exactly -> 254 (Uint8ClampedArray rounding).
    assert color.ybr_full_to_rgb(np.array([[[33, 253, 128]]], dtype=np.uint8))[0, 0, 2] == 254
    assert color.ybr_full_to_rgb(np.array([[[34, 253, 128]]], dtype=np.uint8))[0, 0, 2] == 255


def test_ybr_close_to_pydicom() -> None:
    from pydicom.pixels.processing import convert_color_space

    rng = np.random.default_rng(7)
    ybr = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ours = color.ybr_full_to_rgb(ybr).astype(int)
    theirs = convert_color_space(ybr, "YBR_FULL", "RGB").astype(int)
    assert np.abs(ours - theirs).max() <= 1


def test_native_ybr_full_422_shares_chroma_between_two_pixels() -> None:
    # Y1 Y2 Cb Cr per pair, 2 rows x 4 columns.
    quads = [(10, 20, 100, 150), (30, 40, 128, 128), (50, 60, 200, 90), (70, 80, 0, 255)]
    data = bytes(v for quad in quads for v in quad)
    frame = decode_frame(data, colour("YBR_FULL_422"))
    full = np.array(
        [[(q[0], q[2], q[3]), (q[1], q[2], q[3])] for q in quads], dtype=np.uint8
    ).reshape(2, 4, 3)
    np.testing.assert_array_equal(frame.pixels, expected_ybr_to_rgb(full))
    assert frame.photometric_interpretation == "RGB" and frame.color


def test_native_ybr_full_422_with_odd_columns_is_a_decode_error() -> None:
    from imageloader.errors import DecodeError

    with pytest.raises(DecodeError, match="even number of columns"):
        decode_frame(bytes(2 * 3 * 2), colour("YBR_FULL_422", rows=2, columns=3), image_id="x")


@pytest.mark.parametrize("pi", ["RGB", "YBR_FULL"])
def test_planar_configuration(pi: str) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (2, 4, 3), dtype=np.uint8)
    by_pixel = decode_frame(pixels.tobytes(), colour(pi, planar=0))
    by_plane = decode_frame(pixels.transpose(2, 0, 1).tobytes(), colour(pi, planar=1))
    want = pixels if pi == "RGB" else expected_ybr_to_rgb(pixels)
    np.testing.assert_array_equal(by_pixel.pixels, want)
    np.testing.assert_array_equal(by_plane.pixels, want)
    assert by_plane.pixels.flags.c_contiguous


def test_rgba_adds_opaque_alpha() -> None:
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    frame = decode_frame(pixels.tobytes(), colour("RGB"), RGBA)
    assert frame.pixels.shape == (2, 4, 4)
    np.testing.assert_array_equal(frame.pixels[..., :3], pixels)
    assert (frame.pixels[..., 3] == 255).all()
    assert frame.max_value == 255  # alpha counts, as in Cornerstone's getMinMax


def test_16_bit_rgb_keeps_its_top_eight_bits() -> None:
    pixels = np.array([0, 255, 256, 65535, 32768, 4095] * 4, dtype=np.uint16).reshape(2, 4, 3)
    frame = decode_frame(pixels.tobytes(), colour("RGB", bits=16))
    assert frame.pixels.dtype == np.uint8
    np.testing.assert_array_equal(frame.pixels, (pixels >> 8).astype(np.uint8))


def test_colour_ignores_the_modality_lut() -> None:
    params = dataclasses.replace(colour("RGB"), rescale_slope=2.0, rescale_intercept=-5.0)
    frame = decode_frame(bytes(range(24)), params)
    np.testing.assert_array_equal(frame.pixels.ravel(), range(24))
    assert not frame.prescale.scaled


# -- PALETTE COLOR ------------------------------------------------------------------------


def palette_params(palette: Palette, bits: int = 8, rows: int = 1, columns: int = 6) -> PixelParams:
    return PixelParams(
        transfer_syntax_uid=EXPLICIT_LE,
        rows=rows,
        columns=columns,
        samples_per_pixel=1,
        bits_allocated=bits,
        bits_stored=bits,
        pixel_representation=0,
        photometric_interpretation="PALETTE COLOR",
        palette=palette,
    )


def make_palette(red, green, blue, first: int = 0, bits: int = 8) -> Palette:
    dtype = np.uint8 if bits == 8 else np.uint16
    red, green, blue = (np.asarray(c, dtype=dtype) for c in (red, green, blue))
    return Palette(
        (len(red), first, bits),
        (len(green), first, bits),
        (len(blue), first, bits),
        red,
        green,
        blue,
    )


def test_8_bit_palette_with_first_mapped_value_and_out_of_range_indices() -> None:
    palette = make_palette([10, 20, 30], [11, 21, 31], [12, 22, 32], first=5)
    indices = bytes([0, 4, 5, 6, 7, 200])  # below -> first entry, past the end -> last
    frame = decode_frame(indices, palette_params(palette))
    np.testing.assert_array_equal(
        frame.pixels[0],
        [[10, 11, 12], [10, 11, 12], [10, 11, 12], [20, 21, 22], [30, 31, 32], [30, 31, 32]],
    )
    assert frame.color and frame.photometric_interpretation == "RGB"


def test_16_bit_palette_shifts_down_when_it_holds_16_bit_values() -> None:
    palette = make_palette([0, 0x1234, 0xFFFF], [0x0100, 0x8000, 0x00FF], [0, 0, 0xFF00], bits=16)
    frame = decode_frame(bytes([0, 1, 2, 0, 1, 2]), palette_params(palette))
    np.testing.assert_array_equal(
        frame.pixels[0, :3], [[0, 1, 0], [0x12, 0x80, 0], [0xFF, 0, 0xFF]]
    )


def test_16_bit_descriptor_with_8_bit_values_is_not_shifted() -> None:
    # Writers that declare 16 bits but store 0-255: shifting would give black.
    palette = make_palette([0, 128, 255], [1, 2, 3], [4, 5, 6], bits=16)
    frame = decode_frame(bytes([0, 1, 2, 2, 1, 0]), palette_params(palette))
    np.testing.assert_array_equal(frame.pixels[0, :3], [[0, 1, 4], [128, 2, 5], [255, 3, 6]])


def test_palette_with_16_bit_indices_and_rgba() -> None:
    entries = 4096
    ramp = (np.arange(entries) * 16).astype(np.uint16)
    palette = make_palette(ramp, ramp[::-1], np.full(entries, 0xFFFF), first=100, bits=16)
    indices = np.array([0, 100, 101, 4195, 4196, 65535], dtype=np.uint16)
    frame = decode_frame(indices.tobytes(), palette_params(palette, bits=16), RGBA)
    position = np.clip(indices.astype(int) - 100, 0, entries - 1)
    want = np.stack(
        [ramp[position] >> 8, ramp[::-1][position] >> 8, np.full(6, 255), np.full(6, 255)], -1
    )
    np.testing.assert_array_equal(frame.pixels[0], want)


def test_palette_without_tables_is_a_decode_error() -> None:
    from imageloader.errors import DecodeError

    params = PixelParams(EXPLICIT_LE, 1, 2, 1, 8, 8, 0, "PALETTE COLOR")
    with pytest.raises(DecodeError, match="palette"):
        decode_frame(bytes(2), params, image_id="pal")
