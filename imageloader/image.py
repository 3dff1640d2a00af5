"""The value types a load produces: :class:`Image` (Cornerstone's IImage) and :class:`PreScale`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Image", "PreScale", "default_window"]


@dataclass(frozen=True, slots=True)
class PreScale:
    """What the decode applied to the stored values (Cornerstone's ``preScale``).

    ``enabled`` says scaling was asked for; ``scaled`` that it was applied. When
    scaled, ``pixel_data = stored * slope + intercept`` (times ``suvbw`` for PET SUV
    or ``dose_grid_scaling`` for RTDOSE when present).
    """

    enabled: bool = False
    scaled: bool = False
    slope: float = 1.0
    intercept: float = 0.0
    modality: str | None = None
    suvbw: float | None = None
    dose_grid_scaling: float | None = None


def default_window(lo: float, hi: float) -> tuple[float, float]:
    """Cornerstone's window for an object without one: ``(|hi-lo|+1, (lo+hi+1)/2)``.

    Returns ``(width, centre)``.
    """
    return (abs(hi - lo) + 1.0, (lo + hi + 1.0) / 2.0)


@dataclass(eq=False, slots=True)
class Image:
    """A loaded image: the pixels and the fields a viewer or a service needs.

    The fields are those of Cornerstone3D's ``IImage`` in snake_case. ``pixel_data``
    has shape ``(rows, columns)`` for greyscale and ``(rows, columns, components)``
    for colour (interleaved RGB or RGBA).
    """

    image_id: str
    pixel_data: npt.NDArray[Any]
    rows: int
    columns: int
    height: int
    width: int
    color: bool
    rgba: bool
    number_of_components: int
    min_pixel_value: float
    max_pixel_value: float
    slope: float = 1.0
    intercept: float = 0.0
    window_center: float = 128.0
    window_width: float = 256.0
    voi_lut_function: str | None = None
    invert: bool = False
    photometric_interpretation: str = "MONOCHROME2"
    row_pixel_spacing: float = 1.0
    column_pixel_spacing: float = 1.0
    size_in_bytes: int = 0
    data_type: str = "uint8"
    prescale: PreScale = field(default_factory=PreScale)
    decode_time_ms: float = 0.0
    load_time_ms: float = 0.0
    transfer_syntax_uid: str | None = None
    #: Cornerstone's decodeLevel: the pixels are at 1/2ⁿ of the frame's rows and
    #: columns (0: full size); ``row/column_pixel_spacing`` are of these pixels.
    decode_level: int = 0

    @classmethod
    def from_array(cls, image_id: str, array: npt.ArrayLike, **fields: Any) -> Image:
        """Build an Image from a numpy array, deriving what the array tells.

        ``rows``, ``columns``, ``height``, ``width``, ``min/max_pixel_value``,
        ``size_in_bytes``, ``data_type``, ``color``, ``rgba`` and
        ``number_of_components`` come from the array (2-D is greyscale, 3-D with 3 or 4
        components is colour); the window defaults from the data range for greyscale
        and to 256/128 for colour. Any field may be given to override (the data
        range is not computed when both ends are given). Every loader builds its
        images here (through :func:`~imageloader.decode.image.create_image`).
        """
        pixels = np.asarray(array)
        if pixels.ndim == 2:
            components = 1
        elif pixels.ndim == 3 and pixels.shape[2] in (1, 3, 4):
            components = int(pixels.shape[2])
            if components == 1:
                pixels = pixels[:, :, 0]
        else:
            raise ValueError(
                f"pixel array must be (rows, columns) or (rows, columns, 3|4), got {pixels.shape}"
            )
        rows, columns = int(pixels.shape[0]), int(pixels.shape[1])
        color = components in (3, 4)
        if "min_pixel_value" in fields and "max_pixel_value" in fields:
            lo, hi = fields["min_pixel_value"], fields["max_pixel_value"]
        elif pixels.size:
            lo, hi = float(pixels.min()), float(pixels.max())
        else:
            lo = hi = 0.0
        derived: dict[str, Any] = {
            "rows": rows,
            "columns": columns,
            "height": rows,
            "width": columns,
            "color": color,
            "rgba": components == 4,
            "number_of_components": components,
            "min_pixel_value": lo,
            "max_pixel_value": hi,
            "size_in_bytes": int(pixels.nbytes),
            "data_type": pixels.dtype.name,
            "photometric_interpretation": "RGB" if color else "MONOCHROME2",
        }
        if color:
            derived["window_width"], derived["window_center"] = 256.0, 128.0
        else:
            derived["window_width"], derived["window_center"] = default_window(lo, hi)
        names = _FIELDS if cls is Image else {f.name for f in dataclasses.fields(cls)}
        unknown = fields.keys() - names
        if unknown:
            raise TypeError(f"unknown Image fields: {sorted(unknown)}")
        derived.update(fields)
        return cls(image_id=image_id, pixel_data=pixels, **derived)

    def replace(self, **changes: Any) -> Image:
        """A copy with some fields changed (the pixel array is shared, not copied)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        return (
            f"Image({self.image_id!r}, {self.rows}x{self.columns}x{self.number_of_components} "
            f"{self.data_type}, min={self.min_pixel_value:g}, max={self.max_pixel_value:g})"
        )


_FIELDS = frozenset(f.name for f in dataclasses.fields(Image))
