"""Cornerstone's ``imagePlaneModule`` for one frame, with its geometry fallbacks.

``row_pixel_spacing = PixelSpacing[0]``, ``column_pixel_spacing = PixelSpacing[1]``;
without a spacing both are 1, without an orientation it is axial (1,0,0 / 0,1,0),
without a position it is the origin, and each default sets ``using_default_values``
(Cornerstone's ``getImagePlaneCalibrated``). Projection radiographs use
ImagerPixelSpacing corrected by the estimated radiographic magnification
(``getPixelSpacingInformation``); multi-frame NM takes its geometry from the
DetectorInformationSequence and RTDOSE steps frames along GridFrameOffsetVector
(``combineFrameInstance``).
"""

from __future__ import annotations

from ..metadata import ImagePlaneModule
from ._values import FrameView, frame_count, to_string

__all__ = ["image_plane_module"]

#: SOP classes of projection radiographs (Cornerstone's getPixelSpacingInformation).
_PROJECTION_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.2",
        "1.2.840.10008.5.1.4.1.1.1.2.1",
        "1.2.840.10008.5.1.4.1.1.1.3",
        "1.2.840.10008.5.1.4.1.1.1.3.1",
        "1.2.840.10008.5.1.4.1.1.12.1",
        "1.2.840.10008.5.1.4.1.1.12.1.1",
        "1.2.840.10008.5.1.4.1.1.12.2",
        "1.2.840.10008.5.1.4.1.1.12.2.1",
        "1.2.840.10008.5.1.4.1.1.12.3",
    }
)
_AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_EPSILON = 1e-5  # Cornerstone's isEqual tolerance

Vector = tuple[float, float, float]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _EPSILON


def _normal(orientation: tuple[float, ...]) -> Vector:
    r, c = orientation[:3], orientation[3:6]
    return (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])


def _along(origin: tuple[float, ...], direction: Vector, distance: float) -> Vector:
    return (
        origin[0] + direction[0] * distance,
        origin[1] + direction[1] * distance,
        origin[2] + direction[2] * distance,
    )


def _projection_spacing(view: FrameView) -> tuple[float, ...] | None:
    """Cornerstone's calculateRadiographicPixelSpacing (ERMF-corrected imager spacing)."""
    spacing = view.numbers("PixelSpacing", 2)
    imager = view.numbers("ImagerPixelSpacing", 2)
    calibration = view.string("PixelSpacingCalibrationType")
    if spacing and calibration in ("GEOMETRY", "FIDUCIAL"):
        return spacing
    if imager is None:
        return spacing
    ermf = view.number("EstimatedRadiographicMagnificationFactor")
    source_to_detector = view.number("DistanceSourceToDetector")
    source_to_patient = view.number("DistanceSourceToPatient")
    if source_to_patient is None:
        source_to_patient = view.number("DistanceSourceToEntrance")
    if ermf is None or ermf <= 1:
        ermf = None
        if source_to_detector and source_to_patient and source_to_patient < source_to_detector:
            ermf = source_to_detector / source_to_patient
        elif spacing and imager[0] > spacing[0]:
            return spacing  # PixelSpacing is already corrected
    if ermf is not None and ermf > 1:
        return tuple(value / ermf for value in imager)
    return spacing or imager


def _pixel_spacing(view: FrameView) -> tuple[float, ...] | None:
    if to_string(view.root_value("SOPClassUID")) in _PROJECTION_SOP_CLASSES:
        return _projection_spacing(view)
    return view.numbers("PixelSpacing", 2)


def _frame_geometry(
    view: FrameView, frames: int
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None, bool]:
    """Orientation and position of the frame; the flag says a position was made up."""
    orientation = view.numbers("ImageOrientationPatient", 6)
    position = view.numbers("ImagePositionPatient", 3)
    if frames < 2:
        return orientation, position, False
    frame = view.frame
    detectors = view.items("DetectorInformationSequence")
    if detectors and (orientation is None or position is None):
        # NM multi-frame: the geometry is the detector's, stepped along the normal.
        detector = FrameView(detectors[0])
        orientation = orientation or detector.numbers("ImageOrientationPatient", 6)
        if position is None:
            start = detector.numbers("ImagePositionPatient", 3)
            step = view.number("SpacingBetweenSlices")
            if start and orientation and step:
                position = _along(start, _normal(orientation), step * (frame - 1))
        return orientation, position, False
    if view.enhanced:
        if position is None:
            return orientation, (0.0, 0.0, float(frame)), True
        return orientation, position, False
    offsets = view.numbers("GridFrameOffsetVector")
    if offsets and orientation and position and frame <= len(offsets):
        # RTDOSE: offsets are either relative (first 0) or absolute z of an axial grid.
        offset = offsets[frame - 1]
        axial = all(_close(a, b) for a, b in zip(orientation, _AXIAL, strict=True))
        if axial and _close(offsets[0], position[2]):
            position = (position[0], position[1], offset)
        elif _close(offsets[0], 0.0):
            position = _along(position, _normal(orientation), offset)
    return orientation, position, False


def image_plane_module(view: FrameView) -> ImagePlaneModule | None:
    """Cornerstone's imagePlaneModule for the view's frame (None without Rows/Columns)."""
    rows, columns = view.integer("Rows"), view.integer("Columns")
    if rows is None or columns is None:
        return None
    frames = max(frame_count(view.root), 1)
    orientation, position, defaulted = _frame_geometry(view, frames)
    spacing = _pixel_spacing(view)
    using_defaults = defaulted
    if spacing is None:
        row_spacing = column_spacing = 1.0
        using_defaults = True
    else:
        row_spacing, column_spacing = spacing[0], spacing[1]
    if orientation is None:
        orientation = _AXIAL
        using_defaults = True
    if position is None:
        position = (0.0, 0.0, 0.0)
        using_defaults = True
    return ImagePlaneModule(
        rows=rows,
        columns=columns,
        frame_of_reference_uid=view.string("FrameOfReferenceUID"),
        image_orientation_patient=tuple(orientation[:6]),
        row_cosines=(orientation[0], orientation[1], orientation[2]),
        column_cosines=(orientation[3], orientation[4], orientation[5]),
        image_position_patient=(position[0], position[1], position[2]),
        slice_thickness=view.number("SliceThickness"),
        slice_location=view.number("SliceLocation"),
        spacing_between_slices=view.number("SpacingBetweenSlices"),
        pixel_spacing=None if spacing is None else (row_spacing, column_spacing),
        row_pixel_spacing=row_spacing,
        column_pixel_spacing=column_spacing,
        using_default_values=using_defaults,
    )
