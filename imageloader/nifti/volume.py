"""A whole NIfTI file in memory, and one frame of it as pixels (blocking: run in a thread).

:func:`read_volume` parses the header first, refuses data over the limits before
inflating anything, then inflates a ``.nii.gz`` into one preallocated buffer (gzip
members one after another) and views the voxels in place, in the file's own
Fortran order: ``data[i, j, frame]``. :func:`frame_pixels` cuts one frame out as
``(rows, columns) = (j, i)`` and applies the modality LUT by the rules of the DICOM
path (:func:`~imageloader.decode.pixels.apply_modality_lut`).
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..decode.params import PixelParams
from ..decode.pixels import apply_modality_lut
from ..errors import DecodeError, ImageTooLargeError
from ..image import PreScale
from ..limits import Limits
from .header import (
    GZIP_MAGIC,
    HeaderReader,
    NiftiInfo,
    check_limits,
    open_file,
    parse_header,
)

__all__ = ["FramePixels", "NiftiVolume", "frame_pixels", "read_file", "read_volume"]

Array = npt.NDArray[Any]

#: Inflate in steps of this many bytes (the peak is the volume plus one step).
_INFLATE_STEP = 16 << 20
_INPUT_STEP = 1 << 20
#: The most deflate can inflate one byte of input to (zlib's technical limit).
_DEFLATE_MAX_RATIO = 1032


@dataclass(eq=False, slots=True)
class NiftiVolume:
    """A parsed NIfTI file: its header and its voxels as ``data[i, j, frame]``."""

    info: NiftiInfo
    data: Array
    #: Smallest and largest stored value in the file (NaN ignored; 0 when all NaN).
    stored_min: float
    stored_max: float

    @property
    def size_in_bytes(self) -> int:
        """Bytes of voxel data held."""
        return int(self.data.nbytes)


@dataclass(frozen=True, slots=True)
class FramePixels:
    """One frame, ready for an Image."""

    pixels: Array
    min_value: float
    max_value: float
    prescale: PreScale
    decode_ms: float


def _header(body: bytes | memoryview, image_id: str) -> NiftiInfo:
    reader = HeaderReader(image_id)
    step = 64 << 10
    for start in range(0, len(body), step):
        if reader.feed(bytes(body[start : start + step])):
            break
    return parse_header(reader.finish(), image_id)


def _inflate(body: memoryview, size: int, image_id: str) -> bytearray:
    """The first ``size`` bytes the gzip stream inflates to (raises when it has fewer)."""
    if size > len(body) * _DEFLATE_MAX_RATIO + 4096:
        # Deflate never inflates more than ~1032x: a header claiming more than that is
        # a short (or hostile) file. Refuse before allocating what it claims.
        raise DecodeError(
            f"truncated NIfTI file: {len(body)} compressed bytes cannot hold {size}",
            image_id=image_id,
        )
    out = bytearray(size)
    view = memoryview(out)
    filled = 0
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        # The input goes in by slices, so that what zlib keeps back between steps (and
        # copies each time) is at most one slice: linear, not quadratic, in the size.
        for start in range(0, len(body), _INPUT_STEP):
            pending: bytes | memoryview = body[start : start + _INPUT_STEP]
            while filled < size:
                if inflater.eof:
                    # Concatenated gzip members are one file (as gzip(1) reads them).
                    rest = inflater.unused_data + bytes(pending)
                    if not rest:
                        break  # the next member starts in the next slice
                    if not rest.startswith(GZIP_MAGIC):
                        return _filled(out, filled, size, image_id)  # trailing bytes
                    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                    pending = rest
                if not pending:
                    break
                chunk = inflater.decompress(pending, min(_INFLATE_STEP, size - filled))
                pending = inflater.unconsumed_tail
                view[filled : filled + len(chunk)] = chunk
                filled += len(chunk)
            if filled >= size:
                break
    except zlib.error as exc:
        raise DecodeError(f"corrupt gzip stream: {exc}", image_id=image_id) from exc
    return _filled(out, filled, size, image_id)


def _filled(out: bytearray, filled: int, size: int, image_id: str) -> bytearray:
    if filled < size:
        raise DecodeError(
            f"truncated NIfTI file: {filled} of {size} bytes after inflating",
            image_id=image_id,
        )
    return out


def _range(data: Array) -> tuple[float, float]:
    if data.dtype.kind == "f":
        # fmin/fmax skip NaN without a warning; the result is NaN only if all are.
        lo, hi = float(np.fmin.reduce(data, axis=None)), float(np.fmax.reduce(data, axis=None))
        return (0.0, 0.0) if np.isnan(lo) else (lo, hi)
    return float(data.min()), float(data.max())


def read_file(path: Path, limit: int, image_id: str) -> bytes:
    """A whole local file, refused over ``limit`` bytes before it is read (blocking)."""
    with open_file(path, image_id) as fp:
        size = os.fstat(fp.fileno()).st_size
        if size > limit:
            raise ImageTooLargeError(
                f"file of {size} bytes exceeds the limit of {limit}", image_id=image_id
            )
        return fp.read()


def read_volume(body: bytes, image_id: str, limits: Limits) -> NiftiVolume:
    """Parse a whole NIfTI file (``.nii`` or ``.nii.gz`` bytes) within the limits."""
    raw = memoryview(body)
    info = _header(raw, image_id)
    check_limits(info, limits, image_id)
    buffer: bytes | bytearray | memoryview
    if bytes(raw[:2]) == GZIP_MAGIC:
        buffer = _inflate(raw, info.end, image_id)
    elif len(raw) < info.end:
        raise DecodeError(
            f"truncated NIfTI file: {len(raw)} of {info.end} bytes", image_id=image_id
        )
    else:
        buffer = raw
    dtype = np.dtype(info.dtype)
    flat = np.frombuffer(buffer, dtype=dtype, count=info.voxels, offset=info.vox_offset)
    if not dtype.isnative:
        flat = flat.astype(dtype.newbyteorder("="))
    data = flat.reshape((info.columns, info.rows, info.frames), order="F")
    lo, hi = _range(data)
    return NiftiVolume(info, data, lo, hi)


def _params(info: NiftiInfo, dtype: np.dtype[Any]) -> PixelParams:
    bits = dtype.itemsize * 8
    return PixelParams(
        transfer_syntax_uid="",  # not DICOM: only the modality LUT inputs are read
        rows=info.rows,
        columns=info.columns,
        samples_per_pixel=1,
        bits_allocated=bits,
        bits_stored=bits,
        pixel_representation=0 if dtype.kind == "u" else 1,
        photometric_interpretation="MONOCHROME2",
        rescale_slope=info.slope,
        rescale_intercept=info.intercept,
    )


def _float_frame(stored: Array, info: NiftiInfo, prescale: bool) -> tuple[Array, PreScale]:
    # Floating-point voxels stay floating point (as Cornerstone keeps Float32 and
    # Float64 NIfTI data): the DICOM container rules are for integer samples.
    dtype = np.float64 if stored.dtype.itemsize > 4 else np.float32
    slope = 1.0 if info.slope is None else info.slope
    intercept = 0.0 if info.intercept is None else info.intercept
    scaled = prescale and (slope != 1 or intercept != 0)
    if not scaled:
        return stored.astype(dtype, copy=True), PreScale(prescale, False, slope, intercept)
    values = stored.astype(np.float64) * slope + intercept
    return values.astype(dtype), PreScale(True, True, slope, intercept)


def frame_pixels(volume: NiftiVolume, frame: int, prescale: bool) -> FramePixels:
    """Frame ``frame`` as a new ``(rows, columns)`` array, scaled when ``prescale``."""
    start = time.perf_counter()
    # data[:, :, f] is Fortran-contiguous (i fastest); its transpose is the
    # C-contiguous (j, i) = (rows, columns) slice, with no reordering of bytes.
    stored = volume.data[:, :, frame].T
    if stored.dtype.kind == "f":
        pixels, record = _float_frame(stored, volume.info, prescale)
        lo, hi = _range(pixels)
    else:
        pixels, lo, hi, record = apply_modality_lut(
            stored, _params(volume.info, stored.dtype), prescale
        )
        if np.may_share_memory(pixels, volume.data):
            pixels = pixels.copy()  # an image must not pin (or write into) the volume
    return FramePixels(pixels, lo, hi, record, (time.perf_counter() - start) * 1000.0)
