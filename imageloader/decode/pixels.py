"""Stored values and the modality LUT, in Cornerstone3D's pixel contract.

- :func:`native_samples` reads an uncompressed frame (either byte order, bit-packed
  1-bit, any alignment) into a new array.
- :func:`stored_values` makes the samples what the pixel module says they are:
  sign-extended from Bits Stored when signed, unused high bits cleared when not.
- :func:`apply_modality_lut` is Cornerstone's preScale: slope·v + intercept (PET
  SUV, RTDOSE DoseGridScaling), in the smallest container that holds the range
  (:func:`dtype_for_range`); float32 whenever the scaling has fractions.

The dtype rule is float32 for a scaling with fractions, else one composition,
``dtype_for_range(*scaled_range(lo, hi, scaling))``: a frame's pixels get it over
the frame's own stored min and max; a volume
(:func:`imageloader.volume.volume_dtype`) gets it over :func:`stored_range`, what
the pixel module allows, before any frame has arrived. (Cornerstone3D chose by the
scaled extremes alone until its fix for issue #2706, so a slope of 0.5 whose frame
extremes came out whole gave an Int16Array and truncated every half in between.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..image import PreScale
from .params import PixelParams

__all__ = [
    "Scaling",
    "apply_modality_lut",
    "dtype_for_range",
    "native_length",
    "native_samples",
    "scaled_range",
    "scaling_for",
    "stored_range",
    "stored_values",
]

Array = npt.NDArray[Any]

_UINT_LIMITS = ((255, np.uint8), (65535, np.uint16), (4294967295, np.uint32))


def dtype_for_range(lo: float, hi: float) -> np.dtype[Any]:
    """The container Cornerstone picks for values in ``[lo, hi]``.

    Integers >= 0: uint8, uint16 or uint32 by ``hi``; negative integers: int8 or
    int16 when they fit; anything else (fractions, wider ranges, NaN) float32.
    """
    lo, hi = float(lo), float(hi)
    if math.isfinite(lo) and math.isfinite(hi) and lo.is_integer() and hi.is_integer():
        if lo >= 0:
            for limit, dtype in _UINT_LIMITS:
                if hi <= limit:
                    return np.dtype(dtype)
        elif lo >= -128 and hi <= 127:
            return np.dtype(np.int8)
        elif lo >= -32768 and hi <= 32767:
            return np.dtype(np.int16)
    return np.dtype(np.float32)


def native_length(params: PixelParams) -> int:
    """Bytes of one uncompressed frame (YBR_FULL_422 holds 2 samples per pixel)."""
    if params.photometric_interpretation == "YBR_FULL_422" and params.samples_per_pixel == 3:
        return params.rows * params.columns * 2 * (params.bits_allocated // 8)
    return params.native_frame_bytes


def native_samples(
    data: bytes | bytearray | memoryview, params: PixelParams, *, big_endian: bool
) -> Array:
    """An uncompressed frame's samples, flat, as a new native-endian unsigned array.

    ``data`` may start at any byte offset; the copy made here is aligned.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    if params.bits_allocated == 1:
        count = params.rows * params.columns * params.samples_per_pixel
        # DICOM packs the first pixel into the least significant bit.
        return np.unpackbits(raw, count=count, bitorder="little")
    size = params.bits_allocated // 8
    count = native_length(params) // size
    source = np.dtype(f"{'>' if big_endian else '<'}u{size}")
    return raw[: count * size].view(source).astype(f"=u{size}")


def stored_values(samples: Array, params: PixelParams, precision: int | None = None) -> Array:
    """The samples as the pixel module defines them.

    Signed data is sign-extended from Bits Stored (or from the codestream's
    precision when that is smaller: JPEG-LS has no sign and stores N-bit
    patterns). Unsigned data has the bits above Bits Stored cleared (they may hold
    overlays). Returns ``samples`` itself when nothing changes.
    """
    bits = params.bits_stored if precision is None else min(params.bits_stored, precision)
    width = samples.dtype.itemsize * 8
    kind = "i" if params.pixel_representation == 1 else "u"
    samples = samples.view(np.dtype(f"{kind}{samples.dtype.itemsize}"))
    if not 0 < bits < width:
        return samples
    if kind == "i":
        shift = width - bits
        out = np.left_shift(samples, shift)
        np.right_shift(out, shift, out=out)  # arithmetic: copies the sign bit down
        return out
    return np.bitwise_and(samples, (1 << bits) - 1, dtype=samples.dtype)


def stored_range(params: PixelParams) -> tuple[int, int]:
    """The range of every value :func:`stored_values` can give for these params.

    Bits Stored (at most Bits Allocated) wide, two's complement when Pixel
    Representation is 1: ``[-2**(b-1), 2**(b-1) - 1]``, else ``[0, 2**b - 1]``.
    """
    bits = max(1, min(params.bits_stored, params.bits_allocated))
    if params.pixel_representation == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


@dataclass(frozen=True, slots=True)
class Scaling:
    """Cornerstone's scalingParameters: what preScale applies to stored values."""

    slope: float
    intercept: float
    modality: str | None = None
    suvbw: float | None = None
    dose_grid_scaling: float | None = None

    def apply(self, values: float) -> float:
        """One value through the scaling, in float64 and Cornerstone's operation order."""
        if self.dose_grid_scaling is not None:
            return values * self.dose_grid_scaling
        scaled = values * self.slope + self.intercept
        return self.suvbw * scaled if self.suvbw is not None else scaled

    @property
    def integral(self) -> bool:
        """Whether every factor and offset is a whole number (integers stay integers)."""
        return _is_integer(self.slope, self.intercept, self.suvbw, self.dose_grid_scaling)


def scaled_range(lo: float, hi: float, scaling: Scaling | None) -> tuple[float, float]:
    """``[lo, hi]`` of stored values through ``scaling`` (None: unchanged), lowest first.

    The modality LUT is monotonic, so its ends are the scaled ends (swapped by a
    negative slope).
    """
    lo, hi = float(lo), float(hi)
    if scaling is None:
        return lo, hi
    ends = (scaling.apply(lo), scaling.apply(hi))
    return min(ends), max(ends)


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def scaling_for(params: PixelParams) -> Scaling | None:
    """The scaling preScale applies, or None when it is the identity (Cornerstone's rule).

    A missing slope or intercept is 1 or 0; PET SUV applies only to modality PT and
    DoseGridScaling only to RTDOSE (which then ignores slope and intercept).
    """
    slope = 1.0 if params.rescale_slope is None else float(params.rescale_slope)
    intercept = 0.0 if params.rescale_intercept is None else float(params.rescale_intercept)
    suvbw = params.suvbw if params.modality == "PT" and _usable(params.suvbw) else None
    dose = params.dose_grid_scaling
    dose = dose if params.modality == "RTDOSE" and _usable(dose) else None
    if slope == 1 and intercept == 0 and suvbw is None and dose is None:
        return None
    return Scaling(slope, intercept, params.modality, suvbw, dose)


def _is_integer(*values: float | None) -> bool:
    return all(v is None or float(v).is_integer() for v in values)


def _wrapped(value: float, dtype: np.dtype[Any]) -> Array:
    # The integer modulo 2**bits, as a scalar of the target type (never overflows).
    return np.array(int(value), dtype=np.int64).astype(dtype)


def _scale(stored: Array, scaling: Scaling, dtype: np.dtype[Any]) -> Array:
    if dtype.kind in "iu" and scaling.integral:
        # Integer arithmetic straight in the target type: exact, because every step
        # is exact modulo 2**bits and the result is known to fit (its range chose
        # the type). One copy and one pass instead of a float round trip.
        out = stored.astype(dtype)
        if scaling.dose_grid_scaling is not None:
            np.multiply(out, _wrapped(scaling.dose_grid_scaling, dtype), out=out)
            return out
        if scaling.slope != 1:
            np.multiply(out, _wrapped(scaling.slope, dtype), out=out)
        if scaling.intercept != 0:
            np.add(out, _wrapped(scaling.intercept, dtype), out=out)
        if scaling.suvbw is not None:
            np.multiply(out, _wrapped(scaling.suvbw, dtype), out=out)
        return out
    values = stored.astype(np.float64)
    if scaling.dose_grid_scaling is not None:
        values *= scaling.dose_grid_scaling
    else:
        values *= scaling.slope
        values += scaling.intercept
        if scaling.suvbw is not None:
            values *= scaling.suvbw
    # Only a float32 dtype comes here with fractions (an integral scaling of values
    # beyond int64's exact range would too, and truncates toward zero, as storing
    # into an Int16Array does).
    return values.astype(dtype)


def apply_modality_lut(
    stored: Array, params: PixelParams, prescale: bool
) -> tuple[Array, float, float, PreScale]:
    """Cornerstone's preScale step: returns pixels, their min and max, and the PreScale record.

    Without scaling (``prescale`` False, or an identity modality LUT) the stored
    values are kept, still in the container their range calls for.
    """
    lo, hi = stored.min().item(), stored.max().item()
    scaling = scaling_for(params) if prescale else None
    # The dtype rule (a volume applies it to stored_range(params) instead). A LUT
    # with fractions is float32 even when the frame's extremes come out whole (as
    # Cornerstone3D since its #2706 fix): the values between them need not.
    if scaling is not None and not scaling.integral:
        dtype = np.dtype(np.float32)
    else:
        dtype = dtype_for_range(*scaled_range(lo, hi, scaling))
    if scaling is None:
        out = stored if stored.dtype == dtype else stored.astype(dtype)
        slope = 1.0 if params.rescale_slope is None else float(params.rescale_slope)
        intercept = 0.0 if params.rescale_intercept is None else float(params.rescale_intercept)
        record = PreScale(prescale, False, slope, intercept, params.modality)
        return out, float(lo), float(hi), record
    out = _scale(stored, scaling, dtype)
    # The same arithmetic on the two extremes gives the data's own min and max
    # (the scaling is monotonic), without another pass over the pixels.
    extremes = _scale(np.array([lo, hi], dtype=stored.dtype), scaling, dtype)
    record = PreScale(
        enabled=True,
        scaled=True,
        slope=scaling.slope,
        intercept=scaling.intercept,
        modality=params.modality,
        suvbw=scaling.suvbw,
        dose_grid_scaling=scaling.dose_grid_scaling,
    )
    return out, float(extremes.min()), float(extremes.max()), record
