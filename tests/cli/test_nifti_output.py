"""``format="nifti"`` (``--format nifti``) against dcm2niix, and ``index.csv``, from local files.

The reference is dcm2niix on the same DICOM files: after ``as_closest_canonical``,
voxels equal and affines within 0.01 mm. The Orthanc paths (a shuffled upload, a
multi-frame instance over WADO-RS) are in ``tests/integration/test_nifti_orthanc.py``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from imageloader import ImageLoader
from imageloader.errors import MetadataError
from imageloader.output import COLUMNS, PHI_COLUMNS, OutputConflictError, prefetch
from tests.cli.test_cli_orthanc import run_cli
from tests.corpus import CORNERSTONE
from tests.support.nifti_reference import (
    ENHANCED_CT,
    assert_same_nifti,
    dcm2niix,
    make_ct_series,
    oblique,
    require_dcm2niix,
)

nibabel = pytest.importorskip("nibabel")
pytestmark = pytest.mark.timeout(120)


def ids_of(files: tuple[Path, ...] | list[Path]) -> list[str]:
    return [f"dicomfile:{p}" for p in files]


async def to_nifti(ids: list[str], out: Path, **options: object):  # type: ignore[no-untyped-def]
    async with ImageLoader(max_web_workers=1) as loader:
        return await prefetch(loader, ids, output=out, format="nifti", **options)  # type: ignore[arg-type]


def index(out: Path) -> list[dict[str, str]]:
    with (out / "index.csv").open(newline="") as file:
        return list(csv.DictReader(file))


async def test_axial_ct_equals_dcm2niix(tmp_path: Path) -> None:
    require_dcm2niix()
    made = make_ct_series(tmp_path / "dicom", "axial")
    out = tmp_path / "out"
    # Loaded in reverse scan order: the file is in scan order all the same.
    report = await to_nifti(ids_of(made.files[::-1]), out)
    assert report.ok and [w.format for w in report.written] == ["nifti"]
    path = out / f"{made.series_uid}.nii.gz"
    assert report.written[0].data == path
    image = nibabel.load(path)
    header = image.header
    assert image.shape == (512, 512, 6) and header.get_data_dtype() == np.int16
    assert int(header["qform_code"]) == int(header["sform_code"]) == 1
    assert header.get_xyzt_units() == ("mm", "sec")
    # RAS: DICOM's x and y change sign; slices step +1.5 mm along z from the first.
    np.testing.assert_allclose(image.affine[:3, 3], [120.0, 130.0, 40.0], atol=1e-4)
    np.testing.assert_allclose(image.affine[:3, 2], [0.0, 0.0, 1.5], atol=1e-6)
    # Voxel (i, j, k) is column i, row j of slice k, in Hounsfield units (int16).
    data = np.asarray(image.dataobj)
    first = nibabel.load(path).dataobj[:, :, 0]
    assert data[:, :, 1].astype(int).sum() - np.asarray(first).astype(int).sum() == 7 * 512 * 512
    assert_same_nifti(path, dcm2niix(made.folder, tmp_path / "reference"))
    [row] = index(out)
    assert row == {
        "file": path.name,
        "format": "nifti",
        "study_instance_uid": made.study_uid,
        "series_instance_uid": made.series_uid,
        "modality": "CT",
        "series_number": row["series_number"],
        "frames": "6",
        "shape": "512x512x6",
        "dtype": "int16",
        "spacing": "0.675781x0.675781x1.5",
        "manifest": f"{made.series_uid}.json",
    }
    manifest = json.loads((out / row["manifest"]).read_text())
    assert manifest["format"] == "nifti" and manifest["file"] == path.name
    assert manifest["nifti"]["datatype"] == "int16" and manifest["nifti"]["qform_code"] == 1
    assert manifest["image_ids"] == ids_of(made.files)  # scan order


async def test_oblique_series_equals_dcm2niix(tmp_path: Path) -> None:
    require_dcm2niix()
    made = make_ct_series(tmp_path / "dicom", "oblique", orientation=oblique(25.0, 10.0))
    out = tmp_path / "out"
    report = await to_nifti(ids_of(made.files), out)
    assert report.ok
    ours = assert_same_nifti(
        out / f"{made.series_uid}.nii.gz", dcm2niix(made.folder, tmp_path / "reference")
    )
    # Oblique indeed: the canonical affine's first columns are not axis-aligned.
    assert np.count_nonzero(np.abs(ours.affine[:3, :3]) > 1e-3) > 3


async def test_fractional_slope_keeps_stored_integers_with_scl(tmp_path: Path) -> None:
    require_dcm2niix()
    made = make_ct_series(tmp_path / "dicom", "half", slope=0.5)
    out = tmp_path / "out"
    report = await to_nifti(ids_of(made.files), out)
    assert report.ok
    path = out / f"{made.series_uid}.nii.gz"
    image = nibabel.load(path)
    # The stored integers, scaled by the header as dcm2niix writes them.
    assert image.get_data_dtype() == np.int16
    assert image.dataobj.slope == 0.5 and image.dataobj.inter == -1024.0
    values = image.get_fdata()
    assert np.any(values % 1 == 0.5)  # the halves are there
    assert_same_nifti(path, dcm2niix(made.folder, tmp_path / "reference"))
    [row] = index(out)
    assert row["dtype"] == "float32"  # the values' type, as a volume of the series


async def test_enhanced_multiframe_instance_equals_dcm2niix(tmp_path: Path) -> None:
    require_dcm2niix()
    from pydicom.data import get_testdata_file

    source = Path(get_testdata_file(ENHANCED_CT))
    out = tmp_path / "out"
    report = await to_nifti([f"dicomfile:{source}?frame={k}" for k in (2, 1)], out)
    assert report.ok and report.written[0].frames == 2
    assert_same_nifti(report.written[0].data, dcm2niix(source, tmp_path / "reference"))


async def test_rgb_image_is_rgb24_equal_to_dcm2niix(tmp_path: Path) -> None:
    require_dcm2niix()
    source = CORNERSTONE / "TestPattern_RGB.dcm"
    report = await to_nifti([f"dicomfile:{source}"], tmp_path / "out")
    assert report.ok
    image = nibabel.load(report.written[0].data)
    assert image.get_data_dtype().names == ("R", "G", "B") and image.shape == (640, 400, 1)
    reference = dcm2niix(source, tmp_path / "reference")
    mine = nibabel.as_closest_canonical(image)
    theirs = nibabel.as_closest_canonical(reference)
    np.testing.assert_array_equal(np.asarray(mine.dataobj), np.asarray(theirs.dataobj))
    np.testing.assert_allclose(mine.affine, theirs.affine, rtol=0, atol=0.01)


async def test_gantry_tilt_keeps_the_shear_in_the_sform(tmp_path: Path) -> None:
    # dcm2niix also writes a resampled "_Tilt_1" copy; we write the slices as
    # acquired, and the affine maps each voxel to where DICOM says it is.
    made = make_ct_series(tmp_path / "dicom", "tilt", tilt_mm=0.4)
    out = tmp_path / "out"
    report = await to_nifti(ids_of(made.files), out)
    assert report.ok
    image = nibabel.load(out / f"{made.series_uid}.nii.gz")
    import pydicom

    for k, file in enumerate(made.files):
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        cosines = np.array(ds.ImageOrientationPatient, float)
        row, column = cosines[:3], cosines[3:]
        dy, dx = (float(v) for v in ds.PixelSpacing)
        for i, j in ((0, 0), (511, 0), (100, 400)):
            lps = np.array(ds.ImagePositionPatient, float) + i * dx * row + j * dy * column
            ras = image.affine @ [i, j, k, 1.0]
            np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-3)
    assert image.header["sform_code"] == 1


async def test_include_phi_adds_patient_columns_only_when_asked(tmp_path: Path) -> None:
    made = make_ct_series(tmp_path / "dicom", "phi", slices=2, patient=("PAT-7", "ROE^RICHARD"))
    plain, with_phi = tmp_path / "plain", tmp_path / "phi"
    assert (await to_nifti(ids_of(made.files), plain)).ok
    text = (plain / "index.csv").read_text()
    assert "PAT-7" not in text and "ROE" not in text
    assert list(index(plain)[0]) == list(COLUMNS)
    assert (await to_nifti(ids_of(made.files), with_phi, include_phi=True)).ok
    [row] = index(with_phi)
    assert list(row) == [*COLUMNS, *PHI_COLUMNS]
    assert (row["patient_id"], row["patient_name"]) == ("PAT-7", "ROE^RICHARD")
    import pydicom

    assert row["study_date"] == pydicom.dcmread(made.files[0]).StudyDate == "20010105"


async def test_frames_of_two_sizes_fail_their_series_by_name(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    from tests.integrations.series import make_study

    study = make_study(tmp_path / "dicom", "nifti-mixed")
    out = tmp_path / "out"
    report = await to_nifti(study.dicomfile_ids(), out)
    # The CT series is written; the mixed one (128x128 and 64x64) is not, and says why.
    assert [w.series for w in report.written] == [study.ct_series_uid]
    error = report.errors[f"series:{study.mixed_series_uid}"]
    assert isinstance(error, MetadataError)
    assert "several sizes (128x128, 64x64)" in str(error) and "not one NIfTI volume" in str(error)
    assert [r["series_instance_uid"] for r in index(out)] == [study.ct_series_uid]
    assert get_testdata_file("CT_small.dcm")  # the source of both series


async def test_one_position_twice_is_not_a_volume(tmp_path: Path) -> None:
    made = make_ct_series(tmp_path / "dicom", "cine", slices=3, spacing=0.0)
    report = await to_nifti(ids_of(made.files), tmp_path / "out")
    [error] = report.errors.values()
    assert isinstance(error, MetadataError) and "3 frames share a position" in str(error)
    assert not report.written


async def test_another_format_in_the_same_directory_is_a_conflict(tmp_path: Path) -> None:
    made = make_ct_series(tmp_path / "dicom", "conflict", slices=2)
    out = tmp_path / "out"
    async with ImageLoader(max_web_workers=0) as loader:
        first = await prefetch(loader, ids_of(made.files), output=out)
        assert first.ok and (out / f"{made.series_uid}.npy").is_file()
        second = await prefetch(loader, ids_of(made.files), output=out, format="nifti")
    [error] = second.errors.values()
    assert isinstance(error, OutputConflictError) and "as npy" in str(error)
    assert not (out / f"{made.series_uid}.nii.gz").exists()
    assert [r["format"] for r in index(out)] == ["npy"]  # the series as it is on disk


def test_cli_writes_nifti_and_the_index(tmp_path: Path) -> None:
    require_dcm2niix()
    made = make_ct_series(tmp_path / "dicom", "cli")
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(ids_of(made.files)) + "\n")
    out = tmp_path / "out"
    result = run_cli(
        "prefetch", "--ids", str(ids), "--output", str(out), "--format", "nifti",
        "--include-phi", "--workers", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wrote 1 series" in result.stdout and "1 NIfTI" in result.stdout
    assert f"index: {out / 'index.csv'}" in result.stdout
    assert_same_nifti(
        out / f"{made.series_uid}.nii.gz", dcm2niix(made.folder, tmp_path / "reference")
    )
    assert index(out)[0]["patient_id"] == "PAT-0001"
    # --format without --output is a usage error.
    usage = run_cli("prefetch", "--ids", str(ids), "--format", "nifti")
    assert usage.returncode == 2 and "go with --output" in usage.stderr


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    from imageloader.output import SeriesWriter

    with pytest.raises(ValueError, match="unknown output format 'nii'"):
        SeriesWriter(tmp_path, format="nii")


async def test_a_rerun_skips_complete_nifti_series_and_keeps_the_index(tmp_path: Path) -> None:
    made = make_ct_series(tmp_path / "dicom", "rerun", slices=3)
    other = make_ct_series(tmp_path / "dicom2", "rerun-other", slices=2)
    out = tmp_path / "out"
    first = await to_nifti(ids_of(made.files), out)
    written = (out / f"{made.series_uid}.nii.gz").stat().st_mtime_ns
    # The second run finds the first series complete and adds the other one.
    second = await to_nifti(ids_of([*made.files, *other.files]), out)
    assert first.ok and second.ok and (second.skipped, second.loaded) == (3, 2)
    assert (out / f"{made.series_uid}.nii.gz").stat().st_mtime_ns == written
    assert sorted(r["series_instance_uid"] for r in index(out)) == sorted(
        [made.series_uid, other.series_uid]
    )
