"""Metadata modules for NIfTI slices: where each slice is, in DICOM's patient coordinates.

Axis convention: frame ``f`` is the slice ``k = f mod nz`` of volume ``t = f div nz``
(Cornerstone's ``nifti:<url>?frame=<f>`` reads ``rows × columns`` voxels at offset
``f·nx·ny``, so frames run k-fastest through every volume). Its pixel array has
shape ``(rows, columns) = (nj, ni)``: ``pixel[r, c]`` is voxel ``(i=c, j=r, k)``.
So the row cosines (the direction of increasing column) are the affine's i column,
the column cosines its j column, each normalised, with ``PixelSpacing = (Δj, Δi)``;
the first pixel of slice ``k`` is at ``affine @ (0, 0, k, 1)``.

NIfTI's world is RAS+ and DICOM's LPS+; :mod:`.header` negates the first
two rows of the affine, so nothing here (nor in the pixels) is flipped again.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from ..image import default_window
from ..metadata import (
    GeneralSeriesModule,
    ImagePixelModule,
    ImagePlaneModule,
    ModalityLutModule,
    VoiLutModule,
)
from .header import NiftiInfo

__all__ = ["FRAME_OF_REFERENCE_UID", "frame_modules", "series_uid", "voi_module"]

#: Cornerstone gives every NIfTI this frame of reference: NIfTI files of one
#: subject share world coordinates, so an image and its label map overlay.
FRAME_OF_REFERENCE_UID = "1.2.840.10008.1.4"

_DEFAULT_AXES = np.eye(3)


def series_uid(source: str) -> str:
    """A stable UID for the file (``2.25.`` + a name-based UUID of its URL or path)."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, source).int}"


def _axes(info: NiftiInfo) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], bool]:
    """Unit i, j, k directions (as columns), their spacings, and whether i or j defaulted.

    A zero-length axis (pixdim 0) gets 1 mm: along x or y for i and j (the
    in-plane calibration is then a default), along their normal for k (a 2-D
    image often has no slice thickness, which costs nothing in-plane).
    """
    matrix = np.asarray(info.affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    units = np.empty((3, 3))
    defaulted = False
    for axis in range(3):
        if spacing[axis] > 0:
            units[:, axis] = matrix[:, axis] / spacing[axis]
        elif axis < 2:
            units[:, axis] = _DEFAULT_AXES[:, axis]
            spacing[axis] = 1.0
            defaulted = True
        else:
            units[:, 2] = np.cross(units[:, 0], units[:, 1])
            spacing[2] = 1.0
    return units, spacing, defaulted


def _vector(values: np.ndarray[Any, Any]) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))


def plane_module(info: NiftiInfo, frame: int) -> ImagePlaneModule:
    """The image plane of ``frame`` (see the module docstring for the convention)."""
    units, spacing, defaulted = _axes(info)
    affine = np.asarray(info.affine, dtype=np.float64)
    k = frame % info.slices
    position = affine[:3, 3] + k * spacing[2] * units[:, 2]
    row, column = _vector(units[:, 0]), _vector(units[:, 1])
    normal = np.cross(units[:, 0], units[:, 1])
    return ImagePlaneModule(
        rows=info.rows,
        columns=info.columns,
        frame_of_reference_uid=FRAME_OF_REFERENCE_UID,
        image_orientation_patient=(*row, *column),
        row_cosines=row,
        column_cosines=column,
        image_position_patient=_vector(position),
        slice_thickness=float(spacing[2]),
        slice_location=float(np.dot(position, normal)),
        spacing_between_slices=float(spacing[2]),
        pixel_spacing=(float(spacing[1]), float(spacing[0])),
        row_pixel_spacing=float(spacing[1]),
        column_pixel_spacing=float(spacing[0]),
        using_default_values=defaulted,
    )


def pixel_module(info: NiftiInfo) -> ImagePixelModule:
    """The stored voxels as a pixel module: one sample, MONOCHROME2, the data type's bits."""
    dtype = np.dtype(info.dtype)
    bits = dtype.itemsize * 8
    return ImagePixelModule(
        samples_per_pixel=1,
        photometric_interpretation="MONOCHROME2",
        rows=info.rows,
        columns=info.columns,
        bits_allocated=bits,
        bits_stored=bits,
        high_bit=bits - 1,
        pixel_representation=0 if dtype.kind == "u" else 1,
    )


def voi_module(lo: float, hi: float) -> VoiLutModule:
    """A window that maps ``[lo, hi]`` onto the display range."""
    width, center = default_window(lo, hi)
    return VoiLutModule(window_center=(center,), window_width=(width,))


def frame_modules(info: NiftiInfo, source: str, frame: int, modality: str) -> dict[str, Any]:
    """Every module registered for one frame.

    The VOI module comes from the header's ``cal_min``/``cal_max`` when it sets a
    display range; otherwise the loader adds one from the data when it reads them.
    """
    modules: dict[str, Any] = {
        "imagePixelModule": pixel_module(info),
        "imagePlaneModule": plane_module(info, frame),
        "generalSeriesModule": GeneralSeriesModule(
            modality=modality,
            series_instance_uid=series_uid(source),
            series_description=info.description or None,
        ),
        "modalityLutModule": ModalityLutModule(
            rescale_slope=1.0 if info.slope is None else info.slope,
            rescale_intercept=0.0 if info.intercept is None else info.intercept,
        ),
    }
    if info.cal_max > info.cal_min:
        modules["voiLutModule"] = voi_module(info.cal_min, info.cal_max)
    return modules
