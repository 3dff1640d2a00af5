"""Turning an Image into something to look at: VOI windowing, PNG, montages.

Used by the demo's montage and the FastAPI example's PNG endpoint. Windowing is
Cornerstone's linear VOI LUT (DICOM PS3.3 C.11.2.1.2); the PNG encoder is a few
lines over zlib, so rendering needs no imaging library.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .image import Image

__all__ = ["encode_png", "montage", "resize_nearest", "to_display"]

U8 = npt.NDArray[np.uint8]


def to_display(
    image: Image, *, window_center: float | None = None, window_width: float | None = None
) -> U8:
    """Pixels as uint8 for display: windowed greyscale (inverted for MONOCHROME1) or RGB."""
    pixels = image.pixel_data
    if image.color:
        return np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)
    center = image.window_center if window_center is None else window_center
    width = max(image.window_width if window_width is None else window_width, 1.0)
    values = pixels.astype(np.float32)
    if not image.prescale.scaled and (image.slope != 1 or image.intercept != 0):
        # Stored values: the window is in modality units, so apply the modality LUT.
        values = values * image.slope + image.intercept
    # DICOM's linear function: c - 0.5 and w - 1 keep the window symmetric on integers.
    low = (center - 0.5) - (width - 1) / 2
    scaled = (values - low) / max(width - 1, 1.0) * 255.0
    out: U8 = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if image.invert:
        out = 255 - out
    return out


def resize_nearest(pixels: npt.NDArray[Any], height: int, width: int) -> npt.NDArray[Any]:
    """Nearest-neighbour resize (enough for thumbnails and montages)."""
    rows = (np.arange(height) * pixels.shape[0] // max(height, 1)).clip(0, pixels.shape[0] - 1)
    cols = (np.arange(width) * pixels.shape[1] // max(width, 1)).clip(0, pixels.shape[1] - 1)
    resized: npt.NDArray[Any] = pixels[rows][:, cols]
    return resized


def _fit(pixels: U8, size: int) -> U8:
    height, width = pixels.shape[:2]
    scale = size / max(height, width)
    resized = resize_nearest(pixels, max(1, round(height * scale)), max(1, round(width * scale)))
    if resized.ndim == 2:
        resized = np.repeat(resized[:, :, None], 3, axis=2)
    tile = np.zeros((size, size, 3), np.uint8)
    top, left = (size - resized.shape[0]) // 2, (size - resized.shape[1]) // 2
    tile[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    return tile


def montage(tiles: Sequence[U8], *, columns: int = 4, tile_size: int = 160, gap: int = 4) -> U8:
    """Tiles (greyscale or RGB uint8) fitted into squares on a grid, as one RGB image."""
    if not tiles:
        raise ValueError("montage needs at least one tile")
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    step = tile_size + gap
    sheet = np.full((rows * step + gap, columns * step + gap, 3), 32, np.uint8)
    for index, tile in enumerate(tiles):
        r, c = divmod(index, columns)
        top, left = gap + r * step, gap + c * step
        sheet[top : top + tile_size, left : left + tile_size] = _fit(tile, tile_size)
    return sheet


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(pixels: npt.NDArray[Any], *, level: int = 6) -> bytes:
    """PNG bytes of a uint8 greyscale (H, W) or RGB(A) (H, W, 3|4) array, or uint16 greyscale."""
    array = np.ascontiguousarray(pixels)
    if array.ndim == 2:
        color_type = 0
        channels = 1
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        color_type = 2 if array.shape[2] == 3 else 6
        channels = array.shape[2]
    else:
        raise ValueError(f"cannot encode an array of shape {array.shape} as PNG")
    if array.dtype == np.uint16 and channels == 1:
        depth, raw = 16, array.astype(">u2")
    elif array.dtype == np.uint8:
        depth, raw = 8, array
    else:
        raise ValueError(f"PNG needs uint8 (or uint16 greyscale), not {array.dtype}")
    height, width = array.shape[:2]
    rows = raw.reshape(height, -1).view(np.uint8)
    # Filter type 0 (None) before each scanline.
    scanlines = np.hstack([np.zeros((height, 1), np.uint8), rows]).tobytes()
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(scanlines, level)),
            _chunk(b"IEND", b""),
        )
    )
