"""A series as one NIfTI-1 file (``.nii.gz``), as dcm2niix writes it.

- **Voxels** are the series' volume (:func:`imageloader.volume.volume_dtype`, the
  frames as decoded), laid out ``(columns, rows, slices)``: NIfTI's first index runs
  along a DICOM row, the second down the columns, the third along the scan axis
  (slices in scan order, lowest position first). Colour series are ``RGB24``.
- **Scaling**: where the modality LUT has fractions (the volume is float32) and one
  slope and intercept hold for the whole series, the file keeps the stored integers
  with ``scl_slope``/``scl_inter``, as dcm2niix does; the check is exact (every voxel
  read back through the scaling equals the decoded value), else the voxels are
  written as float32 with no scaling. Integer volumes need none (``scl_slope`` 1).
- **The affine** maps voxels to RAS+ millimetres (NIfTI's convention; DICOM's
  patient coordinates are LPS, so x and y change sign): its columns are the row
  direction times the column spacing, the column direction times the row spacing,
  and the step from the first slice's position to the next (the mean step from
  first to last). For an oblique series the directions are oblique; for a
  gantry-tilted one the step is not along the slices' normal and the affine
  carries that shear exactly (the sform; a qform cannot hold a shear, so it is the
  nearest rigid one). Nothing is resampled: dcm2niix's tilt-corrected copy
  (``_Tilt_1``) is a resampling we do not make. ``qform_code`` and ``sform_code``
  are 1 (scanner); without plane metadata the affine is the pixel spacing alone
  and both codes are 0 (unknown).

The file is streamed: the header, then each staged frame's bytes (a frame in C order
is one NIfTI slice), through gzip at level 1, so memory is one frame. Needs nibabel
(``imageloader[nifti]``) for the header.
"""

from __future__ import annotations

import gzip
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MetadataError

__all__ = ["NiftiLayout", "nifti_layout", "write_nifti"]

#: LPS (DICOM) → RAS (NIfTI).
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_VOX_OFFSET = 352  # 348-byte header + 4-byte extension flag (no extensions)
_STORED: dict[tuple[Any, Any], np.dtype[Any]] = {
    (8, 0): np.dtype(np.uint8),
    (8, 1): np.dtype(np.int8),
    (16, 0): np.dtype(np.uint16),
    (16, 1): np.dtype(np.int16),
}


@dataclass(frozen=True, slots=True)
class NiftiLayout:
    """What a series' NIfTI file holds: shape, voxel type, scaling and affine."""

    shape: tuple[int, int, int]  # (columns, rows, slices)
    dtype: np.dtype[Any]  # the values' dtype (the volume's)
    affine: np.ndarray[Any, Any]  # 4x4, RAS+
    codes: int  # qform_code and sform_code
    rgb: bool = False  # uint8 frames of three samples: RGB24 voxels
    stored: np.dtype[Any] | None = None  # the integers on disk, when scaled
    slope: float = 1.0
    inter: float = 0.0

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel size (mm) along each axis: the lengths of the affine's columns."""
        x, y, z = (float(np.linalg.norm(self.affine[:3, i])) for i in range(3))
        return x, y, z

    @property
    def datatype(self) -> str:
        """The voxel type on disk."""
        return "RGB24" if self.rgb else str(self.stored or self.dtype)

    def describe(self) -> dict[str, Any]:
        """JSON-ready, for the series' manifest."""
        return {
            "shape": list(self.shape),
            "datatype": self.datatype,
            "scl_slope": self.slope,
            "scl_inter": self.inter,
            "zooms": list(self.zooms),
            "affine": [[float(v) for v in row] for row in self.affine],
            "qform_code": self.codes,
            "sform_code": self.codes,
        }


def _plane(modules: Mapping[str, Any]) -> Mapping[str, Any]:
    plane = modules.get("imagePlaneModule")
    return plane if isinstance(plane, Mapping) else {}


def _vector(values: Any, default: Sequence[float]) -> np.ndarray[Any, Any]:
    return np.asarray(values if values is not None else default, dtype=np.float64)


def _affine(modules: Sequence[Mapping[str, Any]], placed: bool) -> tuple[np.ndarray[Any, Any], int]:
    """The RAS affine of frames in scan order (their modules), and the q/sform code."""
    first = _plane(modules[0])
    column_spacing = float(first.get("column_pixel_spacing") or 1.0)
    row_spacing = float(first.get("row_pixel_spacing") or 1.0)
    thickness = float(first.get("spacing_between_slices") or first.get("slice_thickness") or 1.0)
    if not placed:
        return np.diag([column_spacing, row_spacing, thickness, 1.0]), 0
    row = _vector(first.get("row_cosines"), (1.0, 0.0, 0.0))
    column = _vector(first.get("column_cosines"), (0.0, 1.0, 0.0))
    origin = _vector(first.get("image_position_patient"), (0.0, 0.0, 0.0))
    if len(modules) > 1:
        last = _vector(_plane(modules[-1]).get("image_position_patient"), (0.0, 0.0, 0.0))
        step = (last - origin) / (len(modules) - 1)
    else:
        step = np.cross(row, column) * thickness
    lps = np.eye(4)
    lps[:3, 0] = row * column_spacing
    lps[:3, 1] = column * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return _LPS_TO_RAS @ lps, 1


def _scaling(
    modules: Sequence[Mapping[str, Any]],
    frames: Callable[[], Iterable[np.ndarray[Any, Any]]],
    dtype: np.dtype[Any],
) -> tuple[np.dtype[Any], float, float] | None:
    """(stored dtype, slope, intercept) if the float volume is exactly stored integers
    through one modality LUT; None otherwise. Reads every frame once."""
    if dtype.kind != "f":
        return None
    luts = {
        (lut.get("rescale_slope"), lut.get("rescale_intercept"))
        for lut in (m.get("modalityLutModule") or {} for m in modules)
    }
    pixel = modules[0].get("imagePixelModule") or {}
    stored = _STORED.get((pixel.get("bits_allocated"), pixel.get("pixel_representation")))
    if len(luts) != 1 or stored is None:
        return None
    slope, inter = next(iter(luts))
    if not isinstance(slope, int | float) or not isinstance(inter, int | float) or slope == 0:
        return None
    # As NIfTI stores them (float32) and a reader applies them (in float64).
    slope, inter = float(np.float32(slope)), float(np.float32(inter))
    info = np.iinfo(stored)
    for values in frames():
        integers = np.rint((values.astype(np.float64) - inter) / slope)
        if integers.size and (integers.min() < info.min or integers.max() > info.max):
            return None
        if not np.array_equal((integers * slope + inter).astype(dtype), values.astype(dtype)):
            return None
    return stored, slope, inter


def nifti_layout(
    modules: Sequence[Mapping[str, Any]],
    frames: Callable[[], Iterable[np.ndarray[Any, Any]]],
    frame_shape: tuple[int, ...],
    dtype: np.dtype[Any],
    *,
    placed: bool,
) -> NiftiLayout:
    """How a series is written: its frames' metadata ``modules`` in scan order
    (``placed``: sorted by their plane metadata), ``frames()`` their pixels in that
    order, each of ``frame_shape``, the volume of ``dtype``. Raises MetadataError
    for frames NIfTI has no voxel type for."""
    rows, columns = frame_shape[:2]
    components = frame_shape[2] if len(frame_shape) == 3 else 1
    if (
        len(frame_shape) not in (2, 3)
        or components not in (1, 3)
        or (components == 3 and dtype != np.uint8)
    ):
        raise MetadataError(
            f"frames of shape {frame_shape} and dtype {dtype} have no NIfTI voxel type "
            "(grayscale, or 8-bit RGB)"
        )
    affine, codes = _affine(modules, placed)
    shape = (columns, rows, len(modules))
    scaled = _scaling(modules, frames, dtype)
    if scaled is not None:
        stored, slope, inter = scaled
        return NiftiLayout(shape, dtype, affine, codes, stored=stored, slope=slope, inter=inter)
    return NiftiLayout(shape, dtype, affine, codes, rgb=components == 3)


def _header_bytes(layout: NiftiLayout) -> bytes:
    import nibabel

    # nibabel is partly typed (and not at all for mypy here): treat it as Any.
    klass: Any = nibabel.Nifti1Header
    header = klass()
    header.set_data_shape(layout.shape)
    header.set_data_dtype("RGB" if layout.rgb else (layout.stored or layout.dtype))
    header.set_qform(layout.affine, code=layout.codes)
    header.set_sform(layout.affine, code=layout.codes)
    header.set_zooms(layout.zooms)
    header.set_xyzt_units("mm", "sec")
    header.set_slope_inter(layout.slope, layout.inter)
    header["vox_offset"] = _VOX_OFFSET
    header["descrip"] = b"imageloader"
    return bytes(header.binaryblock) + b"\0\0\0\0"


def write_nifti(path: Path, frames: Iterable[np.ndarray[Any, Any]], layout: NiftiLayout) -> None:
    """Write ``frames`` (in scan order, each of the volume's dtype) as ``path``
    (``.nii.gz``), atomically: a temporary file moved into place."""
    on_disk = layout.stored or layout.dtype
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as out,
        ):
            out.write(_header_bytes(layout))
            for values in frames:
                if layout.stored is not None:
                    values = np.rint((values.astype(np.float64) - layout.inter) / layout.slope)
                out.write(np.ascontiguousarray(values, dtype=on_disk).data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
