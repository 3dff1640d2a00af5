"""Series to convert to NIfTI, and dcm2niix, the reference converter, to compare with.

The series are the corpus CT (``CTImage.dcm``, 512x512, signed 16-bit, intercept
-1024) repeated as slices with their own values (slice ``k`` adds ``7 k``), in the
geometry a test asks for: axial, oblique (the image plane turned about two axes),
gantry-tilted (positions that do not follow the slices' normal), a slope of 0.5.
UIDs are derived from a key, so a series is the same every time it is made.

:func:`dcm2niix` runs the Debian package's converter (``dcm2niix -z y``) and returns
its main output (not the ``_Tilt_1``/``_Eq_1`` resamplings). :func:`assert_same_nifti`
is the issue's rule: after ``nibabel.as_closest_canonical``, voxel values equal and
affines within 0.01 mm.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

CT = Path(__file__).resolve().parents[1] / "data" / "cornerstone" / "CTImage.dcm"
#: eCT_Supplemental.dcm from pydicom-data: an Enhanced CT instance, two 512x512 frames
#: placed by per-frame functional groups.
ENHANCED_CT = "eCT_Supplemental.dcm"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def require_dcm2niix() -> str:
    """dcm2niix's path; skips without it, fails under CI=true (CI installs it)."""
    path = shutil.which("dcm2niix")
    if path is None:
        reason = "dcm2niix is not installed (Debian package dcm2niix, see .ci/system-deps)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true, but {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def oblique(about_x: float, about_z: float) -> tuple[float, ...]:
    """Row and column cosines of the axial plane turned about x, then about z (degrees)."""
    ax, az = math.radians(about_x), math.radians(about_z)
    row = np.array([math.cos(az), math.sin(az), 0.0])
    column = np.array([-math.sin(az) * math.cos(ax), math.cos(az) * math.cos(ax), math.sin(ax)])
    return (*row.tolist(), *column.tolist())


@dataclass(frozen=True)
class MadeSeries:
    study_uid: str
    series_uid: str
    #: The files in scan order (lowest position along the normal first).
    files: tuple[Path, ...]
    folder: Path


def make_ct_series(
    folder: Path,
    key: str,
    *,
    slices: int = 6,
    spacing: float = 1.5,
    orientation: tuple[float, ...] = AXIAL,
    tilt_mm: float = 0.0,
    slope: float | None = None,
    patient: tuple[str, str] = ("PAT-0001", "DOE^JANE"),
) -> MadeSeries:
    """Write a CT series to ``folder`` (see the module's docstring).

    ``tilt_mm``: each slice also moves this far along the column direction (a
    gantry tilt's shear). ``slope``: RescaleSlope instead of 1. Instance numbers
    run against the scan order, so only positions sort the slices.
    """
    folder.mkdir(parents=True, exist_ok=True)

    def uid(*parts: str) -> str:
        return generate_uid(entropy_srcs=["imageloader-nifti-tests", key, *parts])

    study, series = uid("study"), uid("series")
    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, column)
    files = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(slices):
            ds = pydicom.dcmread(CT)
            pixels = ds.pixel_array.astype(np.int16) + np.int16(7 * k)
            ds.PixelData = pixels.tobytes()
            origin = np.array([-120.0, -130.0, 40.0])
            position = origin + normal * spacing * k + column * tilt_mm * k
            ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
            ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
            ds.SliceThickness = spacing
            ds.InstanceNumber = slices - k
            if slope is not None:
                ds.RescaleSlope = slope
            ds.PatientID, ds.PatientName = patient
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid("sop", str(k))
            path = folder / f"slice-{k:02d}.dcm"
            ds.save_as(path, enforce_file_format=False)
            files.append(path)
    return MadeSeries(study, series, tuple(files), folder)


def dcm2niix(source: Path, out: Path) -> Any:
    """Convert ``source`` (a folder, or one file) with dcm2niix; its main NIfTI image."""
    tool = require_dcm2niix()
    import nibabel

    out.mkdir(parents=True, exist_ok=True)
    if source.is_file():  # dcm2niix converts folders: give the file one of its own
        folder = out.parent / f"{out.name}-input"
        folder.mkdir(exist_ok=True)
        shutil.copy(source, folder / source.name)
        source = folder
    result = subprocess.run(
        [tool, "-z", "y", "-f", "%s", "-o", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [main] = [p for p in out.glob("*.nii.gz") if "_Tilt_" not in p.name and "_Eq_" not in p.name]
    return nibabel.load(main)


def assert_same_nifti(ours: Path, reference: Any) -> Any:
    """Ours equals the reference after as_closest_canonical; returns ours, canonical."""
    import nibabel

    mine = nibabel.as_closest_canonical(nibabel.load(ours))
    theirs = nibabel.as_closest_canonical(reference)
    assert mine.shape == theirs.shape
    np.testing.assert_array_equal(mine.get_fdata(), theirs.get_fdata())
    np.testing.assert_allclose(mine.affine, theirs.affine, rtol=0, atol=0.01)
    return mine
