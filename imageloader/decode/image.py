"""From a decoded frame and its metadata modules to an :class:`~imageloader.Image`.

The fields follow Cornerstone3D's ``createImage``: window from the VOI module (the
first value), else from the data range; colour images 256/128; MONOCHROME1 inverts;
spacing from the image plane module (1 when absent); slope and intercept are the
modality LUT's, with ``prescale.scaled`` telling whether the pixels already carry it.
Shared by every loader (DICOM, web images, NIfTI); the fields the array itself
tells (shape, components, size, dtype) are :meth:`Image.from_array`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..image import Image, default_window
from ..metadata import ImagePlaneModule, ModalityLutModule, VoiLutModule
from .params import DecodedFrame

__all__ = ["create_image"]


def _first(values: tuple[float, ...] | None) -> float | None:
    return float(values[0]) if values else None


def create_image(
    image_id: str,
    decoded: DecodedFrame,
    modules: Mapping[str, Any],
    *,
    transfer_syntax_uid: str | None = None,
    photometric_interpretation: str | None = None,
) -> Image:
    """The Image for ``decoded``; ``modules`` maps module names to module objects.

    ``photometric_interpretation`` is the object's own (MONOCHROME1 decides
    ``invert``); the Image reports the one the pixels are in now.
    """
    lo, hi = decoded.min_value, decoded.max_value
    voi = modules.get("voiLutModule")
    center = width = None
    function = None
    if isinstance(voi, VoiLutModule):
        center, width = _first(voi.window_center), _first(voi.window_width)
        function = voi.voi_lut_function
    if decoded.color:
        width, center = 256.0, 128.0
    elif center is None or width is None:
        width, center = default_window(lo, hi)

    modality = modules.get("modalityLutModule")
    slope = intercept = None
    if isinstance(modality, ModalityLutModule):
        slope, intercept = modality.rescale_slope, modality.rescale_intercept

    plane = modules.get("imagePlaneModule")
    row_spacing = column_spacing = None
    if isinstance(plane, ImagePlaneModule):
        row_spacing, column_spacing = plane.row_pixel_spacing, plane.column_pixel_spacing
        if decoded.decode_level and plane.rows and plane.columns:
            # Fewer, larger pixels: spacing grows by the reduction along each axis.
            row_spacing = (row_spacing or 1.0) * plane.rows / decoded.pixels.shape[0]
            column_spacing = (column_spacing or 1.0) * plane.columns / decoded.pixels.shape[1]

    source_photometric = photometric_interpretation or decoded.photometric_interpretation
    return Image.from_array(
        image_id,
        decoded.pixels,
        color=decoded.color,
        min_pixel_value=lo,
        max_pixel_value=hi,
        slope=1.0 if slope is None else float(slope),
        intercept=0.0 if intercept is None else float(intercept),
        window_center=float(center),
        window_width=float(width),
        voi_lut_function=function,
        invert=source_photometric == "MONOCHROME1",
        photometric_interpretation=decoded.photometric_interpretation,
        row_pixel_spacing=float(row_spacing or 1.0),
        column_pixel_spacing=float(column_spacing or 1.0),
        prescale=decoded.prescale,
        decode_time_ms=decoded.decode_ms,
        transfer_syntax_uid=transfer_syntax_uid,
        decode_level=decoded.decode_level,
    )
