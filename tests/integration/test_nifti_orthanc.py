"""The dataset job on the real Orthanc: query → NIfTI + index.csv, equal to dcm2niix.

A series uploaded in shuffled order (Orthanc lists its instances in upload order,
not by position) and an Enhanced CT multi-frame instance (frames placed by
per-frame functional groups, read from WADO-RS metadata), each prefetched with
``imageloader prefetch --dicomweb … --query … --format nifti`` and compared with
dcm2niix on the source files. Dask's ``prefetch_many(format="nifti")`` is in
``tests/integrations/test_dask.py``.
"""

from __future__ import annotations

import csv
import random
import warnings
from pathlib import Path

import pydicom
import pytest

from tests.cli.test_cli_orthanc import run_cli
from tests.support.encoders import fresh_uids
from tests.support.nifti_reference import (
    ENHANCED_CT,
    assert_same_nifti,
    dcm2niix,
    make_ct_series,
    oblique,
    require_dcm2niix,
)
from tests.support.orthanc import OrthancServer

nibabel = pytest.importorskip("nibabel")
pytestmark = pytest.mark.timeout(180)


def index(out: Path) -> dict[str, dict[str, str]]:
    with (out / "index.csv").open(newline="") as file:
        return {row["series_instance_uid"]: row for row in csv.DictReader(file)}


def test_shuffled_upload_and_multiframe_from_a_query_equal_dcm2niix(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    require_dcm2niix()
    made = make_ct_series(
        tmp_path / "ct", "orthanc-shuffled", slices=8, orientation=oblique(12.0, 0.0)
    )
    files = list(made.files)
    random.Random(7).shuffle(files)
    assert files != list(made.files)
    for path in files:
        orthanc.upload(path)
    enhanced = tmp_path / "enhanced" / "enhanced.dcm"
    enhanced.parent.mkdir()
    from pydicom.data import get_testdata_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file(ENHANCED_CT))
        fresh_uids(ds, "nifti-orthanc-enhanced")
        ds.StudyInstanceUID = made.study_uid  # one study: one query finds both series
        ds.save_as(enhanced, enforce_file_format=False)
    orthanc.upload(enhanced)

    out = tmp_path / "out"
    result = run_cli(
        "prefetch", "--dicomweb", orthanc.dicomweb_url, "--study", made.study_uid,
        "--query", "Modality=CT", "--output", str(out), "--format", "nifti", "--workers", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "prefetching 10 images" in result.stdout and "wrote 2 series" in result.stdout
    rows = index(out)
    assert set(rows) == {made.series_uid, ds.SeriesInstanceUID}
    assert rows[made.series_uid]["shape"] == "512x512x8"
    assert rows[ds.SeriesInstanceUID]["frames"] == "2"
    assert_same_nifti(out / rows[made.series_uid]["file"], dcm2niix(made.folder, tmp_path / "r1"))
    assert_same_nifti(out / rows[ds.SeriesInstanceUID]["file"], dcm2niix(enhanced, tmp_path / "r2"))
