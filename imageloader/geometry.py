"""Where slices are in space: sort imageIds along the scan axis, spacing, origin, direction.

As Cornerstone3D's ``sortImageIdsAndGetSpacing``: the scan axis is the normal of
the first image's orientation (row cosines × column cosines); images are ordered by
their position along it, lowest first, so slice ``k`` lies at
``origin + k · spacing_z · normal``. The volume's direction is (row, column, normal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import MetadataError
from .metadata import ImagePlaneModule

__all__ = ["SliceGeometry", "slice_geometry"]


@dataclass(frozen=True, slots=True)
class SliceGeometry:
    """Slices in scan order and the volume grid they form."""

    image_ids: tuple[str, ...]
    #: Position of the first slice's first pixel (patient coordinates, mm).
    origin: tuple[float, float, float]
    #: (column spacing, row spacing, slice spacing) in mm: along x, y, z of the array.
    spacing: tuple[float, float, float]
    #: Row cosines, column cosines, normal: nine numbers, row-major.
    direction: tuple[float, ...]
    #: Distances of each slice along the normal (for checking regularity).
    positions: tuple[float, ...]

    @property
    def regular(self) -> bool:
        """Whether slices are evenly spaced (within 1% of the spacing, or 0.01 mm)."""
        if len(self.positions) < 3:
            return True
        gaps = np.diff(self.positions)
        return bool(np.all(np.abs(gaps - self.spacing[2]) <= max(0.01, 0.01 * self.spacing[2])))


def _vector(values: Sequence[float] | None, default: Sequence[float]) -> np.ndarray:
    return np.asarray(values if values is not None else default, dtype=np.float64)


def slice_geometry(planes: Mapping[str, ImagePlaneModule]) -> SliceGeometry:
    """Sort the imageIds of ``planes`` along the scan axis and describe their grid.

    Raises MetadataError when the images do not share rows, columns and orientation.
    """
    if not planes:
        raise MetadataError("no images to place")
    ids = list(planes)
    first = planes[ids[0]]
    row = _vector(first.row_cosines, (1.0, 0.0, 0.0))
    column = _vector(first.column_cosines, (0.0, 1.0, 0.0))
    normal = np.cross(row, column)
    for image_id in ids[1:]:
        plane = planes[image_id]
        if (plane.rows, plane.columns) != (first.rows, first.columns):
            raise MetadataError(
                f"image is {plane.rows}x{plane.columns}, the first is "
                f"{first.rows}x{first.columns}: not one volume",
                image_id=image_id,
            )
        other = _vector(plane.row_cosines, (1.0, 0.0, 0.0))
        if not np.allclose(other, row, atol=1e-3):
            raise MetadataError("image orientation differs from the first", image_id=image_id)

    def distance(image_id: str) -> float:
        position = _vector(planes[image_id].image_position_patient, (0.0, 0.0, 0.0))
        return float(np.dot(position, normal))

    ordered = sorted(ids, key=distance)
    positions = tuple(distance(i) for i in ordered)
    if len(ordered) > 1 and positions[-1] > positions[0]:
        z = (positions[-1] - positions[0]) / (len(ordered) - 1)
    else:
        z = float(first.spacing_between_slices or first.slice_thickness or 1.0)
    origin = _vector(planes[ordered[0]].image_position_patient, (0.0, 0.0, 0.0))
    return SliceGeometry(
        image_ids=tuple(ordered),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        spacing=(
            float(first.column_pixel_spacing or 1.0),
            float(first.row_pixel_spacing or 1.0),
            float(z),
        ),
        direction=tuple(float(v) for v in (*row, *column, *normal)),
        positions=positions,
    )
