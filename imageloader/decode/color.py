"""Colour to interleaved RGB(A) uint8, as Cornerstone3D's colour converters do.

YBR_FULL uses Cornerstone's formula in float64, rounded half to even and clamped
(what storing into a ``Uint8ClampedArray`` does); native YBR_FULL_422 shares each
Cb/Cr pair between two pixels; PALETTE COLOR goes through 8-bit copies of the
lookup tables. RGB, and YBR_RCT/YBR_ICT (which the JPEG 2000 codec already turned
into RGB), pass through. Samples wider than 8 bits keep their top 8 bits.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from .params import Palette

__all__ = [
    "interleave",
    "palette_to_rgb",
    "to_8bit",
    "to_rgb",
    "ybr_full_422_to_rgb",
    "ybr_full_to_rgb",
]

Array = npt.NDArray[Any]

#: Photometric interpretations whose samples are already RGB after decoding.
_RGB_LIKE = frozenset({"RGB", "YBR_RCT", "YBR_ICT"})
_YBR_FULL = frozenset({"YBR_FULL", "YBR_FULL_422"})


def interleave(flat: Array, rows: int, columns: int, samples: int, planar: int) -> Array:
    """Flat samples as ``(rows, columns)`` or ``(rows, columns, samples)``; always a view."""
    if samples == 1:
        return flat.reshape(rows, columns)
    if planar == 1:
        return flat.reshape(samples, rows, columns).transpose(1, 2, 0)
    return flat.reshape(rows, columns, samples)


def _formula(
    y: npt.ArrayLike, cb: npt.ArrayLike, cr: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    # Cornerstone's expressions, evaluated in float64 in its order of operations.
    luma, blue_diff, red_diff = (np.asarray(v, dtype=np.float64) for v in (y, cb, cr))
    red = luma + 1.402 * (red_diff - 128)
    green = luma - 0.34414 * (blue_diff - 128) - 0.71414 * (red_diff - 128)
    blue = luma + 1.772 * (blue_diff - 128)
    return red, green, blue


def _clamp(values: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    # Uint8ClampedArray: round half to even, then clamp.
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


@functools.cache
def _ybr_tables() -> tuple[Array, Array, Array, Array]:
    """Lookup tables that reproduce the formula exactly, computed once per process.

    Red depends on (Y, Cr) and blue on (Y, Cb): 64 KiB tables of the formula's own
    results. Green depends on all three, but G = Y + offset(Cb, Cr) after rounding
    except where the exact value ends in .5 (two (Cb, Cr) pairs), which
    :func:`_convert` evaluates with the formula itself. Checked against the formula
    for all 2**24 inputs in the tests.
    """
    values = np.arange(256)
    grid_y, grid_c = np.meshgrid(values, values, indexing="ij")
    red = _clamp(_formula(grid_y, 128, grid_c)[0]).ravel()
    blue = _clamp(_formula(grid_y, grid_c, 128)[2]).ravel()
    green_offset = np.rint(_formula(0, grid_y, grid_c)[1]).astype(np.int16).ravel()
    # Exact value Y - (34414·(Cb-128) + 71414·(Cr-128)) / 100000 is a tie when ...50000.
    exact = 34414 * (grid_y - 128) + 71414 * (grid_c - 128)
    ties = np.flatnonzero(exact % 100000 == 50000).astype(np.uint16)
    return red, blue, green_offset, ties


def _convert(y: Array, cb: Array, cr: Array, components: int) -> npt.NDArray[np.uint8]:
    """Contiguous 1-D Y, Cb, Cr planes to ``(n, components)`` RGB(A) uint8."""
    red, blue, green_offset, ties = _ybr_tables()
    out = np.empty((y.size, components), dtype=np.uint8)
    y_high = np.left_shift(y, 8, dtype=np.uint16)
    index = np.bitwise_or(y_high, cr, dtype=np.uint16)
    out[:, 0] = np.take(red, index)
    np.bitwise_or(y_high, cb, out=index)
    out[:, 2] = np.take(blue, index)
    pair = np.left_shift(cb, 8, dtype=np.uint16)
    np.bitwise_or(pair, cr, out=pair)
    green = np.add(np.take(green_offset, pair), y, dtype=np.int16)
    np.clip(green, 0, 255, out=green)
    out[:, 1] = green
    tie = pair == ties[0]
    for value in ties[1:]:  # two values; np.isin would sort the whole frame
        tie |= pair == value
    exact = np.flatnonzero(tie)
    if exact.size:
        out[exact, 1] = _clamp(_formula(y[exact], cb[exact], cr[exact])[1])
    if components == 4:
        out[:, 3] = 255
    return out


def ybr_full_to_rgb(ybr: Array, components: int = 3) -> npt.NDArray[np.uint8]:
    """YBR_FULL samples ``(..., 3)`` uint8 to RGB (or RGBA with ``components=4``) uint8.

    R = Y + 1.402(Cr-128), G = Y - 0.34414(Cb-128) - 0.71414(Cr-128),
    B = Y + 1.772(Cb-128), rounded half to even and clamped, as Cornerstone.
    """
    planes = np.moveaxis(ybr, -1, 0)  # free for colour-by-plane data (RLE, planar native)
    if not planes.flags.c_contiguous:
        # De-interleave once: strided uint8 reads cost more than the table lookups.
        planes = np.ascontiguousarray(ybr.reshape(-1, 3).T)
    y, cb, cr = planes.reshape(3, -1)
    return _convert(y, cb, cr, components).reshape(*ybr.shape[:-1], components)


def ybr_full_422_to_rgb(
    flat: Array, rows: int, columns: int, components: int = 3
) -> npt.NDArray[np.uint8]:
    """Native YBR_FULL_422 (``Y1 Y2 Cb Cr`` per pair of pixels) to RGB(A) uint8.

    Both pixels of a pair share its Cb/Cr (no interpolation), as Cornerstone does.
    """
    if columns % 2:
        raise ValueError(f"YBR_FULL_422 needs an even number of columns, not {columns}")
    quads = flat.reshape(-1, 4)
    y = np.ascontiguousarray(quads[:, 0:2]).reshape(-1)
    cb, cr = (np.repeat(quads[:, i], 2) for i in (2, 3))
    return _convert(y, cb, cr, components).reshape(rows, columns, components)


def to_8bit(samples: Array, bits: int) -> Array:
    """Samples of ``bits`` bits as uint8, keeping the top 8 bits (no copy for uint8)."""
    if samples.dtype == np.uint8:
        return samples
    if bits > 8:
        samples = np.right_shift(samples, bits - 8)
    return np.minimum(samples, 255).astype(np.uint8)


def to_rgb(
    samples: Array, photometric: str, bits_stored: int, rgba: bool = False
) -> npt.NDArray[np.uint8]:
    """``(rows, columns, 3)`` samples in ``photometric`` to contiguous RGB(A) uint8."""
    samples = to_8bit(samples, bits_stored)
    components = 4 if rgba else 3
    if photometric in _YBR_FULL:
        return ybr_full_to_rgb(samples, components)
    if photometric not in _RGB_LIKE:
        raise ValueError(f"no colour conversion for photometric interpretation {photometric!r}")
    if not rgba and samples.shape[-1] == 3 and samples.flags.c_contiguous:
        return samples
    # Channel by channel: four times faster than numpy's generic strided copy
    # when the samples are by plane (RLE, planar native).
    out = np.empty((*samples.shape[:-1], components), dtype=np.uint8)
    for channel in range(3):
        out[..., channel] = samples[..., channel]
    if rgba:
        out[..., 3] = 255
    return out


def _lut_8bit(palette: Palette) -> npt.NDArray[np.uint8]:
    channels = (palette.red, palette.green, palette.blue)
    entries = len(palette.red)
    # Shift only when the tables really are 16-bit: some writers declare 16 bits
    # and store 8-bit values, which a shift would turn black.
    wide = palette.red_descriptor[2] > 8 and any(int(c.max(initial=0)) > 255 for c in channels)
    lut = np.zeros((entries, 3), dtype=np.uint8)  # a short channel reads 0, as in Cornerstone
    for index, channel in enumerate(channels):
        values = channel[:entries].astype(np.uint32)
        if wide:
            values >>= 8
        lut[: len(values), index] = np.minimum(values, 255)
    return lut


def palette_to_rgb(indices: Array, palette: Palette, rgba: bool = False) -> npt.NDArray[np.uint8]:
    """PALETTE COLOR indices to RGB(A) uint8 through the lookup tables.

    Values below the first mapped value take the first entry, values past the
    table the last (descriptors ``(entries, first_mapped, bits)``).
    """
    lut = _lut_8bit(palette)
    if rgba:
        lut = np.concatenate([lut, np.full((len(lut), 1), 255, dtype=np.uint8)], axis=1)
    first = int(palette.red_descriptor[1])
    if indices.dtype == np.uint8 and first == 0 and len(lut) >= 256:
        return lut[indices]  # every index is in range: no clipping pass needed
    index = indices.astype(np.int64)
    index -= first
    np.clip(index, 0, len(lut) - 1, out=index)
    return lut[index]
