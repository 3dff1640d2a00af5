"""NIfTI files for the tests, written by nibabel (the reference reader and writer)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.testing import data_path

#: NIfTI files nibabel ships: (name, shape), covering NIfTI-1 and -2, .nii and
#: .nii.gz, big-endian int16 and float32, 3-D and 4-D, sform and qform.
SAMPLES = {
    "anatomical.nii": (33, 41, 25),
    "example4d.nii.gz": (128, 96, 24, 2),
    "example_nifti2.nii.gz": (32, 20, 12, 2),
    "functional.nii": (17, 21, 3, 20),
    "reoriented_anat_moved.nii": (21, 26, 22),
    "standard.nii.gz": (4, 5, 7),
}


def sample(name: str) -> Path:
    return Path(data_path) / name


def nifti_bytes(
    data: np.ndarray,
    affine: np.ndarray | None = None,
    *,
    version: int = 1,
    gz: bool = False,
    slope: float | None = None,
    inter: float | None = None,
    codes: tuple[int, int] | None = None,
) -> bytes:
    """A single-file NIfTI of ``data`` (stored as its own dtype), optionally gzipped.

    ``codes`` sets (qform_code, sform_code); (0, 0) leaves only pixdim.
    """
    affine = np.eye(4) if affine is None else affine
    klass = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    image = klass(data, affine)
    image.set_data_dtype(data.dtype)
    if codes is not None:
        image.set_qform(affine if codes[0] else None, code=codes[0])
        image.set_sform(affine if codes[1] else None, code=codes[1])
    if slope is not None:
        image.header.set_slope_inter(slope, inter)
    raw = image.to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def write(path: Path, body: bytes) -> Path:
    path.write_bytes(body)
    return path


def index_volume(shape: tuple[int, int, int]) -> np.ndarray:
    """Voxel (i, j, k) holds ``i + 100·j + 10000·k``: its own index, readable back."""
    i, j, k = np.indices(shape)
    return (i + 100 * j + 10000 * k).astype(np.int32)


def oblique_affine(
    spacing: tuple[float, float, float], origin: tuple[float, float, float]
) -> np.ndarray:
    """A RAS affine rotated about all three axes (no axis along x, y or z)."""

    def rotation(axis: int, angle: float) -> np.ndarray:
        c, s = np.cos(angle), np.sin(angle)
        a, b = [n for n in range(3) if n != axis]
        m = np.eye(3)
        m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
        return m

    r = rotation(0, 0.3) @ rotation(1, -0.5) @ rotation(2, 1.1)
    affine = np.eye(4)
    affine[:3, :3] = r @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def nibabel_frames(path: Path | str) -> np.ndarray:
    """nibabel's stored values (unscaled) as ``(nx, ny, frames)``, frames k-fastest."""
    image = nib.load(os.fspath(path))
    raw = np.asanyarray(image.dataobj.get_unscaled())
    return raw.reshape((*raw.shape[:2], -1), order="F")
