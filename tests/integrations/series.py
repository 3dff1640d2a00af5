"""A small synthetic study for the CLI, Dask and example tests, on disk and in Orthanc.

Two series in one study, made from pydicom's sample files with fresh UIDs:

- ``ct``: ``SLICES`` slices of CT_small.dcm, ``SPACING`` mm apart along z, each
  with its own pixel values (the slice index is added), and instance numbers that
  do *not* follow the position, so only a sort by position gives the right volume;
- ``mixed``: CT_small (128x128) and MR_small (64x64) in one series: frames of two
  sizes, which cannot stack into one volume.

Uploads are idempotent (the UIDs are derived from the server's name), so several
test modules can ask for the same study on the session's Orthanc.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from tests.support.orthanc import OrthancServer

from .servers import SAMPLES

SLICES = 12
SPACING = 2.5
# Instance numbers in an order unrelated to position.
_INSTANCE_NUMBERS = [7, 3, 11, 1, 9, 5, 12, 2, 10, 4, 8, 6]


@dataclass(frozen=True)
class SyntheticStudy:
    study_uid: str
    ct_series_uid: str
    mixed_series_uid: str
    #: The CT slices' files, lowest z first (the order a volume must have).
    ct_files: tuple[Path, ...]
    mixed_files: tuple[Path, ...]

    def dicomfile_ids(self) -> list[str]:
        return [f"dicomfile:{p}" for p in (*self.ct_files, *self.mixed_files)]


def _uid(key: str, *parts: str) -> str:
    return generate_uid(entropy_srcs=["imageloader-cli-tests-v2", key, *parts])


def make_study(folder: Path, key: str) -> SyntheticStudy:
    """Write the study's files into ``folder`` (UIDs derived from ``key``)."""
    folder.mkdir(parents=True, exist_ok=True)
    study = _uid(key, "study")
    ct_series, mixed_series = _uid(key, "ct"), _uid(key, "mixed")
    ct_files = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's notes on the sample files' quirks
        for index in range(SLICES):
            ds = pydicom.dcmread(SAMPLES / "CT_small.dcm")
            pixels = ds.pixel_array.astype(np.int16) + np.int16(index * 3)
            ds.PixelData = pixels.tobytes()
            x, y, _ = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, -100.0 + SPACING * index]
            ds.SliceLocation = -100.0 + SPACING * index
            ds.InstanceNumber = _INSTANCE_NUMBERS[index]
            _set_uids(ds, study, ct_series, _uid(key, "ct", str(index)))
            path = folder / f"ct-{index:02d}.dcm"
            ds.save_as(path, enforce_file_format=False)
            ct_files.append(path)
        mixed_files = []
        for index, name in enumerate(("CT_small.dcm", "MR_small.dcm")):
            ds = pydicom.dcmread(SAMPLES / name)
            ds.InstanceNumber = index + 1
            _set_uids(ds, study, mixed_series, _uid(key, "mixed", name))
            path = folder / f"mixed-{index}.dcm"
            ds.save_as(path, enforce_file_format=False)
            mixed_files.append(path)
    return SyntheticStudy(study, ct_series, mixed_series, tuple(ct_files), tuple(mixed_files))


def _set_uids(ds: pydicom.Dataset, study: str, series: str, sop: str) -> None:
    # Orthanc files a study under its patient: one patient for the whole study.
    ds.PatientID, ds.PatientName = "IMAGELOADER-TEST", "Test^Synthetic"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop


_UPLOADED: dict[str, SyntheticStudy] = {}


def study_on(server: OrthancServer, folder: Path) -> SyntheticStudy:
    """The synthetic study, uploaded to ``server`` once per server."""
    study = _UPLOADED.get(server.name)
    if study is None:
        study = make_study(folder / server.name, server.name)
        for path in (*study.ct_files, *study.mixed_files):
            server.upload(path)
        _UPLOADED[server.name] = study
    return study


def local_ct_volume(study: SyntheticStudy) -> np.ndarray:
    """The CT series as the files hold it (modality LUT applied), lowest z first."""
    slices = []
    for path in study.ct_files:
        ds = pydicom.dcmread(path)
        slices.append(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    return np.stack(slices)
