"""Decode levels at the loader: cache keys, and a lower level made from a cached image.

The pixels of a level come from the decode worker (:mod:`imageloader.decode.reduce`);
here is what the loader adds: each level is cached under :func:`level_key` (level 0
is the imageId itself), and :func:`at_level` makes a lower level from a full-size
(or any higher-resolution) Image already in memory, by the same block mean the
worker uses for syntaxes without a reduction of their own.
"""

from __future__ import annotations

import dataclasses

from .decode.reduce import MAX_DECODE_LEVEL, check_level, downsample, reduced_shape
from .image import Image

__all__ = ["MAX_DECODE_LEVEL", "at_level", "check_level", "image_id_of", "level_key"]

_SEPARATOR = "#decodeLevel="


def level_key(image_id: str, level: int) -> str:
    """The image cache's key for ``image_id`` at decode ``level``."""
    return image_id if not level else f"{image_id}{_SEPARATOR}{level}"


def image_id_of(key: str) -> str:
    """The imageId of an image cache key (:func:`level_key`'s inverse)."""
    image_id, separator, level = key.rpartition(_SEPARATOR)
    return image_id if separator and level.isdigit() else key


def at_level(image: Image, level: int) -> Image:
    """``image`` (full size, decode level 0) at ``level``: its pixels block-averaged, its
    size and pixel spacing with them; every other field as it was."""
    if image.decode_level:
        raise ValueError("at_level takes a full-size image (decode_level 0)")
    if not level:
        return image
    rows, columns = reduced_shape(image.rows, image.columns, level)
    pixels = downsample(image.pixel_data, rows, columns)
    return dataclasses.replace(
        image,
        pixel_data=pixels,
        rows=rows,
        columns=columns,
        height=rows,
        width=columns,
        min_pixel_value=float(pixels.min()) if pixels.size else 0.0,
        max_pixel_value=float(pixels.max()) if pixels.size else 0.0,
        row_pixel_spacing=image.row_pixel_spacing * image.rows / rows,
        column_pixel_spacing=image.column_pixel_spacing * image.columns / columns,
        size_in_bytes=int(pixels.nbytes),
        decode_level=level,
        decode_time_ms=0.0,
    )
