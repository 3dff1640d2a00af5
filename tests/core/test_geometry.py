from __future__ import annotations

import pytest

from imageloader.errors import MetadataError
from imageloader.geometry import slice_geometry
from imageloader.metadata import ImagePlaneModule


def _plane(z: float, **kw: object) -> ImagePlaneModule:
    fields: dict[str, object] = {
        "rows": 4,
        "columns": 5,
        "row_cosines": (1.0, 0.0, 0.0),
        "column_cosines": (0.0, 1.0, 0.0),
        "image_position_patient": (-10.0, -20.0, z),
        "row_pixel_spacing": 0.5,
        "column_pixel_spacing": 0.7,
    }
    fields.update(kw)
    return ImagePlaneModule(**fields)  # type: ignore[arg-type]


def test_sorts_along_the_normal_lowest_first() -> None:
    planes = {"c": _plane(5.0), "a": _plane(-5.0), "b": _plane(0.0)}
    geometry = slice_geometry(planes)
    assert geometry.image_ids == ("a", "b", "c")
    assert geometry.origin == (-10.0, -20.0, -5.0)
    assert geometry.spacing == (0.7, 0.5, 5.0)
    assert geometry.direction == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    assert geometry.regular


def test_a_tilted_stack_sorts_by_distance_along_its_own_normal() -> None:
    # Sagittal slices: rows along y, columns along -z, so the normal is -x.
    kw = {"row_cosines": (0.0, 1.0, 0.0), "column_cosines": (0.0, 0.0, -1.0)}
    planes = {
        "x=3": _plane(0.0, image_position_patient=(3.0, 0.0, 0.0), **kw),
        "x=1": _plane(0.0, image_position_patient=(1.0, 0.0, 0.0), **kw),
        "x=2": _plane(0.0, image_position_patient=(2.0, 0.0, 0.0), **kw),
    }
    geometry = slice_geometry(planes)
    assert geometry.image_ids == ("x=3", "x=2", "x=1")
    assert geometry.direction[6:] == (-1.0, 0.0, 0.0)


def test_irregular_spacing_is_reported() -> None:
    geometry = slice_geometry({"a": _plane(0.0), "b": _plane(1.0), "c": _plane(5.0)})
    assert not geometry.regular


def test_one_image_takes_its_slice_thickness() -> None:
    assert slice_geometry({"a": _plane(0.0, slice_thickness=2.5)}).spacing[2] == 2.5


def test_mixed_sizes_or_orientations_are_not_one_volume() -> None:
    with pytest.raises(MetadataError, match="not one volume"):
        slice_geometry({"a": _plane(0.0), "b": _plane(1.0, rows=8)})
    with pytest.raises(MetadataError, match="orientation"):
        slice_geometry({"a": _plane(0.0), "b": _plane(1.0, row_cosines=(0.0, 1.0, 0.0))})
