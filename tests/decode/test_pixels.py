"""Stored values and preScale: sign extension, the dtype table, the modality LUT."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from imageloader.decode.params import DecodeOptions, PixelParams
from imageloader.decode.pixels import dtype_for_range, scaling_for, stored_values
from imageloader.decode.worker import decode_frame

EXPLICIT_LE = "1.2.840.10008.1.2.1"
BIG_ENDIAN = "1.2.840.10008.1.2.2"


def grey(
    rows: int = 2, columns: int = 3, bits: tuple[int, int] = (16, 16), signed: int = 0, **more
) -> PixelParams:
    return PixelParams(
        transfer_syntax_uid=more.pop("transfer_syntax_uid", EXPLICIT_LE),
        rows=rows,
        columns=columns,
        samples_per_pixel=1,
        bits_allocated=bits[0],
        bits_stored=bits[1],
        pixel_representation=signed,
        photometric_interpretation=more.pop("photometric_interpretation", "MONOCHROME2"),
        **more,
    )


def le(values, dtype: str) -> bytes:
    return np.asarray(values, dtype=dtype).tobytes()


@pytest.mark.parametrize(
    ("lo", "hi", "dtype"),
    [
        (0, 0, np.uint8),
        (0, 255, np.uint8),
        (0, 256, np.uint16),
        (3, 65535, np.uint16),
        (0, 65536, np.uint32),
        (0, 4294967295, np.uint32),
        (0, 4294967296, np.float32),
        (-1, 0, np.int8),
        (-128, 127, np.int8),
        (-129, 127, np.int16),
        (-128, 128, np.int16),
        (-32768, 32767, np.int16),
        (-32769, 0, np.float32),
        (-1, 40000, np.float32),
        (0, 0.5, np.float32),
        (-0.5, 10, np.float32),
        (0.0, 255.0, np.uint8),  # integral floats are integers
        (float("nan"), 1, np.float32),
        (0, float("inf"), np.float32),
    ],
)
def test_dtype_table(lo: float, hi: float, dtype: type) -> None:
    assert dtype_for_range(lo, hi) == np.dtype(dtype)


@pytest.mark.parametrize(
    ("stored", "bits", "expected"),
    [
        ([0x0FFF, 0x0800, 0x07FF, 0x0000, 0xF001, 0x1FFF], 12, [-1, -2048, 2047, 0, 1, -1]),
        ([0xFFFF, 0x8000, 0x7FFF, 1, 0, 2], 16, [-1, -32768, 32767, 1, 0, 2]),
        ([0x1FFF, 0x1000, 0x0FFF, 0, 0xE000, 0x3FFF], 13, [-1, -4096, 4095, 0, 0, -1]),
    ],
)
def test_sign_extension_from_bits_stored(stored, bits, expected) -> None:
    params = grey(bits=(16, bits), signed=1)
    frame = decode_frame(le(stored, "<u2"), params, DecodeOptions(prescale=False))
    np.testing.assert_array_equal(frame.pixels.ravel(), expected)
    assert (frame.min_value, frame.max_value) == (min(expected), max(expected))


def test_signed_8bit_is_sign_extended() -> None:
    # Cornerstone stores the shifted values back into a Uint8Array (no sign); we do not.
    params = grey(bits=(8, 8), signed=1)
    frame = decode_frame(
        bytes([0xFF, 0x80, 0x7F, 0, 1, 0xFE]), params, DecodeOptions(prescale=False)
    )
    np.testing.assert_array_equal(frame.pixels.ravel(), [-1, -128, 127, 0, 1, -2])
    assert frame.pixels.dtype == np.int8


def test_unused_high_bits_of_unsigned_data_are_cleared() -> None:
    # Bits above Bits Stored may hold overlay planes (PS3.5 8.1.1).
    params = grey(bits=(16, 12))
    frame = decode_frame(le([0xF123, 0x1FFF, 0x8000, 0, 5, 0x0FFF], "<u2"), params)
    np.testing.assert_array_equal(frame.pixels.ravel(), [0x123, 0xFFF, 0, 0, 5, 0xFFF])


def test_codestream_precision_below_bits_stored_sets_the_sign_bit() -> None:
    # JPEG-LS has no signedness: a 12-bit codestream of signed data holds 12-bit patterns.
    params = grey(bits=(16, 16), signed=1)
    samples = np.array([0x0FFF, 0x0800, 0x07FF], dtype=np.uint16)
    np.testing.assert_array_equal(stored_values(samples, params, precision=12), [-1, -2048, 2047])
    np.testing.assert_array_equal(stored_values(samples, params), [4095, 2048, 2047])


def test_big_endian_and_32_bit() -> None:
    values = [0, 70000, 1, 2, 3, 4294967295]
    params = grey(bits=(32, 32), transfer_syntax_uid=BIG_ENDIAN)
    frame = decode_frame(le(values, ">u4"), params)
    assert frame.pixels.dtype == np.uint32
    np.testing.assert_array_equal(frame.pixels.ravel(), values)


# -- preScale ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "signed", "slope", "intercept", "expected", "dtype"),
    [
        # CT: slope 1, intercept -1024 -> int16
        (
            [0, 1024, 4095, 2000, 10, 20],
            0,
            1.0,
            -1024.0,
            [-1024, 0, 3071, 976, -1014, -1004],
            np.int16,
        ),
        # positive results that fit a byte -> uint8
        ([0, 10, 20, 30, 40, 50], 0, 2.0, 5.0, [5, 25, 45, 65, 85, 105], np.uint8),
        # negative, fits int8
        ([0, 1, 2, 3, 4, 5], 0, 1.0, -100.0, [-100, -99, -98, -97, -96, -95], np.int8),
        # integral ends but fractional values in between: float32, every half kept (the
        # older Cornerstone typed it by its ends, Int8Array, and truncated the halves)
        ([-4, 1, 3, -1, 4, 2], 1, 0.5, 0.0, [-2, 0.5, 1.5, -0.5, 2, 1], np.float32),
        # fractional ends -> float32
        ([0, 1, 2, 3, 4, 5], 0, 0.25, 0.5, [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], np.float32),
        # too wide for int16 with negatives -> float32
        ([0, 65535, 1, 2, 3, 4], 0, 1.0, -1.0, [-1, 65534, 0, 1, 2, 3], np.float32),
        # negative slope flips the range
        ([0, 10, 20, 30, 40, 50], 0, -1.0, 0.0, [0, -10, -20, -30, -40, -50], np.int8),
    ],
)
def test_modality_lut_and_container(stored, signed, slope, intercept, expected, dtype) -> None:
    params = grey(signed=signed, rescale_slope=slope, rescale_intercept=intercept, modality="CT")
    frame = decode_frame(le(stored, "<i2" if signed else "<u2"), params)
    assert frame.pixels.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(frame.pixels.ravel(), np.asarray(expected, dtype=dtype))
    assert (frame.min_value, frame.max_value) == (float(min(expected)), float(max(expected)))
    assert frame.prescale.enabled and frame.prescale.scaled
    assert (frame.prescale.slope, frame.prescale.intercept) == (slope, intercept)


def test_float_scaling_rounds_once_from_float64() -> None:
    # JavaScript computes in float64 and stores into a Float32Array: one rounding.
    slope, intercept = 2.0002442, -4047.0
    stored = np.arange(2000, 2006, dtype=np.uint16)
    params = grey(bits=(16, 12), rescale_slope=slope, rescale_intercept=intercept)
    frame = decode_frame(stored.tobytes(), params)
    expected = (stored.astype(np.float64) * slope + intercept).astype(np.float32)
    np.testing.assert_array_equal(frame.pixels.ravel(), expected)
    assert frame.min_value == float(expected.min()) and frame.max_value == float(expected.max())


def test_identity_modality_lut_is_not_applied_but_still_picks_the_container() -> None:
    params = grey(rescale_slope=1.0, rescale_intercept=0.0)
    frame = decode_frame(le([0, 5, 255, 7, 8, 9], "<u2"), params)
    assert frame.pixels.dtype == np.uint8  # 16-bit storage, values fit a byte
    assert frame.prescale.enabled and not frame.prescale.scaled


def test_no_modality_lut_at_all_is_identity() -> None:
    frame = decode_frame(le([0, 5, 300, 7, 8, 9], "<u2"), grey())
    assert frame.pixels.dtype == np.uint16 and not frame.prescale.scaled


def test_prescale_false_returns_stored_values() -> None:
    params = grey(signed=1, rescale_slope=1.0, rescale_intercept=-1024.0)
    frame = decode_frame(
        le([-2000, 0, 2400, 1, 2, 3], "<i2"), params, DecodeOptions(prescale=False)
    )
    np.testing.assert_array_equal(frame.pixels.ravel(), [-2000, 0, 2400, 1, 2, 3])
    assert frame.pixels.dtype == np.int16
    assert not frame.prescale.enabled and not frame.prescale.scaled
    assert (frame.min_value, frame.max_value) == (-2000.0, 2400.0)


def test_pet_suv_applies_after_the_modality_lut() -> None:
    params = grey(rescale_slope=0.5, rescale_intercept=1.0, modality="PT", suvbw=0.001)
    stored = np.array([0, 100, 2000, 3, 4, 5], dtype=np.uint16)
    frame = decode_frame(stored.tobytes(), params)
    expected = (0.001 * (stored.astype(np.float64) * 0.5 + 1.0)).astype(np.float32)
    np.testing.assert_array_equal(frame.pixels.ravel(), expected)
    assert frame.prescale.suvbw == 0.001 and frame.prescale.modality == "PT"


def test_pet_counts_with_identity_lut_still_scale_by_suv() -> None:
    params = grey(modality="PT", suvbw=2.0)
    frame = decode_frame(le([0, 1, 2, 3, 4, 300], "<u2"), params)
    np.testing.assert_array_equal(frame.pixels.ravel(), [0, 2, 4, 6, 8, 600])
    assert frame.pixels.dtype == np.uint16 and frame.prescale.scaled


def test_suvbw_ignored_unless_modality_pt() -> None:
    assert scaling_for(grey(modality="CT", suvbw=2.0)) is None


def test_rtdose_uses_dose_grid_scaling_not_the_rescale() -> None:
    params = grey(bits=(32, 32), modality="RTDOSE", dose_grid_scaling=1e-3, rescale_slope=7.0)
    stored = np.array([0, 1000, 12345, 3, 4, 5], dtype=np.uint32)
    frame = decode_frame(stored.tobytes(), params)
    expected = (stored.astype(np.float64) * 1e-3).astype(np.float32)
    np.testing.assert_array_equal(frame.pixels.ravel(), expected)
    assert frame.prescale.dose_grid_scaling == 1e-3


def test_nan_suv_is_ignored() -> None:
    assert scaling_for(grey(modality="PT", suvbw=float("nan"))) is None


def test_min_max_come_from_the_data() -> None:
    frame = decode_frame(le([7, 9, 8, 7, 9, 8], "<u2"), grey())
    assert (frame.min_value, frame.max_value) == (7.0, 9.0)


def test_one_bit_frames_unpack_least_significant_bit_first() -> None:
    params = grey(rows=2, columns=8, bits=(1, 1))
    frame = decode_frame(bytes([0b00000001, 0b10000010]), params)
    np.testing.assert_array_equal(
        frame.pixels, [[1, 0, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 1]]
    )
    assert frame.pixels.dtype == np.uint8


def test_pixels_own_their_memory() -> None:
    # A view into the caller's buffer would pin a whole multipart body in the cache.
    body = bytearray(le(range(6), "<u2") * 10)
    frame = decode_frame(memoryview(body)[:12], grey())
    assert frame.pixels.base is None or not np.shares_memory(
        frame.pixels, np.frombuffer(body, np.uint8)
    )
    body[:12] = bytes(12)
    np.testing.assert_array_equal(frame.pixels.ravel(), range(6))


def test_params_are_not_mutated() -> None:
    params = grey(signed=1, rescale_slope=1.0, rescale_intercept=-1024.0)
    before = dataclasses.asdict(params)
    decode_frame(le([1, 2, 3, 4, 5, 6], "<i2"), params)
    assert dataclasses.asdict(params) == before
