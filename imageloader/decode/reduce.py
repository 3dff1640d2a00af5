"""Decode levels: a frame at 1/2ⁿ of its rows and columns, as cheaply as its codec allows.

Cornerstone3D's ``decodeLevel``. Level ``n`` gives ``ceil(rows / 2ⁿ)`` ×
``ceil(columns / 2ⁿ)`` pixels, the size a JPEG 2000 resolution reduction gives:

- **HTJ2K** decodes only the resolutions it needs (OpenJPH through
  ``imagecodecs.htj2k_decode(skipres=n)``): 128² of a 512² CT in ~0.2 ms against ~2 ms.
  OpenJPH does not clamp a reduced resolution: a frame whose reduced samples reach
  the outer sixteenth of their container's range, where a wrapped value lands
  (:func:`may_have_wrapped`), is decoded in full and downsampled instead.
- **JPEG 2000** likewise through OpenJPEG's ``reduce`` (glymur, a ctypes binding
  to the system's libopenjp2: Debian ``libopenjp2-7``; ``imageloader[codecs]``
  installs glymur). glymur reads files, so the codestream goes through a temporary
  file first. A level above the codestream's decomposition levels decodes its
  smallest resolution and is downsampled the rest of the way.
- **JPEG baseline (8-bit)** uses libjpeg-turbo's scaled IDCT (Pillow's ``draft``:
  1/2, 1/4, 1/8), then the rest by downsampling.
- **Every other syntax** (JPEG-LS, JPEG lossless, RLE, uncompressed, and any of the
  above without its binding, or palette colour, whose indices must not be
  averaged) decodes in full and is downsampled: the mean of each 2ⁿ×2ⁿ block of
  the output pixels (edge blocks of an odd size repeat their last row/column),
  rounded for integer types, so dtypes and the pixel contract stay the same.

A codec's reduction is a wavelet (or DCT) low-pass, not a block mean: its values
are close to the downsampled full frame, not equal.
"""

from __future__ import annotations

import importlib.util
import io
import os
import tempfile
from typing import Any

import numpy as np
import numpy.typing as npt

from .codecs import _OPENJPH_ERRORS, CodecOutput, _j2k_photometric, prepare_pillow
from .params import PixelParams
from .syntaxes import CodestreamInfo, Family, jpeg_is_ycbcr

__all__ = [
    "MAX_DECODE_LEVEL",
    "check_level",
    "downsample",
    "may_have_wrapped",
    "reduced_decode",
    "reduced_shape",
]

#: 1/32 of each side: a 512² frame as 16².
MAX_DECODE_LEVEL = 5


def check_level(level: object) -> int:
    """``level`` as a decode level, or ValueError."""
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= MAX_DECODE_LEVEL:
        raise ValueError(f"decode_level must be an integer 0..{MAX_DECODE_LEVEL}, not {level!r}")
    return level


def reduced_shape(rows: int, columns: int, level: int) -> tuple[int, int]:
    """``(ceil(rows / 2ⁿ), ceil(columns / 2ⁿ))``."""
    step = 1 << level
    return -(-rows // step), -(-columns // step)


def downsample(pixels: npt.NDArray[Any], rows: int, columns: int) -> npt.NDArray[Any]:
    """``pixels`` as ``(rows, columns[, components])``: the mean of each block, in its dtype.

    The block is the whole factor between the sizes (a power of two); edge blocks
    that would run past the array repeat its last row or column.
    """
    have_rows, have_columns = pixels.shape[:2]
    if (have_rows, have_columns) == (rows, columns):
        return pixels
    step = max(-(-have_rows // rows), -(-have_columns // columns))
    pad = [(0, rows * step - have_rows), (0, columns * step - have_columns)]
    pad += [(0, 0)] * (pixels.ndim - 2)
    padded = np.pad(pixels, pad, mode="edge") if any(p[1] for p in pad) else pixels
    blocks = padded.reshape(rows, step, columns, step, *pixels.shape[2:])
    means = blocks.mean(axis=(1, 3), dtype=np.float64)
    if pixels.dtype.kind in "iub":
        means = np.rint(means)
    return np.ascontiguousarray(means.astype(pixels.dtype))


def _glymur_available() -> bool:
    return importlib.util.find_spec("glymur") is not None


def _j2k(data: bytes | bytearray | memoryview, level: int) -> npt.NDArray[Any] | None:
    """OpenJPEG's reduction through glymur (None where glymur or libopenjp2 is missing)."""
    if not _glymur_available():
        return None
    import glymur

    if not glymur.version.openjpeg_version or glymur.version.openjpeg_version < "2.3":
        return None  # no usable libopenjp2 on this machine
    fd, path = tempfile.mkstemp(suffix=".j2k")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        step = 1 << level
        pixels: npt.NDArray[Any] = glymur.Jp2k(path)[::step, ::step]
        return pixels
    finally:
        os.unlink(path)


def _jpeg8(
    data: bytes | bytearray | memoryview,
    params: PixelParams,
    info: CodestreamInfo | None,
    level: int,
) -> CodecOutput | None:
    """libjpeg-turbo's scaled decode (Pillow's draft) of an 8-bit YCbCr or grey JPEG."""
    if importlib.util.find_spec("PIL") is None or (info is not None and info.precision != 8):
        return None
    ycbcr = jpeg_is_ycbcr(info, params.photometric_interpretation, params.samples_per_pixel)
    if params.samples_per_pixel == 3 and not ycbcr:
        return None  # RGB stored as is: the full decode keeps its samples untouched
    from PIL import Image

    prepare_pillow()
    step = 1 << min(level, 3)
    with Image.open(io.BytesIO(data), formats=("JPEG",)) as image:
        size = (-(-image.size[0] // step), -(-image.size[1] // step))
        image.draft(image.mode, size)
        pixels = np.asarray(image)
    return CodecOutput(pixels, "RGB" if ycbcr else params.photometric_interpretation, 8)


def may_have_wrapped(pixels: npt.NDArray[Any]) -> bool:
    """Whether OpenJPH's reduced samples may hold values that wrapped around.

    A reduced resolution is the wavelet's low band, which overshoots the data near
    sharp edges (a quarter of the step, measured); OpenJPH converts it to the
    container without clamping, so an overshoot past 0 or the container's top
    wraps to the far end (air beside the edge of a CT's field of view becomes
    white). A wrapped value lands in the outer sixteenth of the container's range
    (an unsigned undershoot at the top), or beside data that lies there itself: a
    frame with any value there is decoded in full instead. For unsigned data only
    the top can hold one (an overshoot past the top needs data near the top).
    """
    if pixels.dtype.kind not in "iu" or not pixels.size:
        return False
    info = np.iinfo(pixels.dtype)
    margin = (int(info.max) - int(info.min) + 1) // 16
    if bool(pixels.max() > info.max - margin):
        return True
    return pixels.dtype.kind == "i" and bool(pixels.min() < info.min + margin)


def reduced_decode(
    family: Family,
    data: bytes | bytearray | memoryview,
    params: PixelParams,
    info: CodestreamInfo | None,
    level: int,
) -> tuple[CodecOutput, str] | None:
    """The frame decoded at (or towards) ``level`` by its codec's own reduction, and
    the codec's name; None where there is none (decode in full, then downsample)."""
    if params.photometric_interpretation == "PALETTE COLOR":
        return None
    precision = info.precision if info is not None else None
    # Never more than the codestream's decomposition levels (the rest is downsampled).
    j2k_level = min(level, info.levels) if info is not None else 0
    if not j2k_level:
        pass
    elif family is Family.HTJ2K and importlib.util.find_spec("imagecodecs") is not None:
        import imagecodecs

        with _OPENJPH_ERRORS.collect() as caught:
            pixels = imagecodecs.htj2k_decode(bytes(data), skipres=j2k_level)
        if caught:
            raise RuntimeError(f"htj2k_decode: {caught[0].exc_value}")
        if may_have_wrapped(pixels):
            return None
        output = CodecOutput(pixels, _j2k_photometric(params), precision)
        return output, "imagecodecs-htj2k"
    elif family is Family.JPEG2000:
        reduced = _j2k(data, j2k_level)
        if reduced is not None:
            return CodecOutput(reduced, _j2k_photometric(params), precision), "glymur"
    if family is Family.JPEG:
        out = _jpeg8(data, params, info, level)
        return None if out is None else (out, "pillow-draft")
    return None
