"""``imageloader prefetch`` and ``info`` run as a user runs them, against a real Orthanc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.integrations.series import SLICES, SPACING, SyntheticStudy, local_ct_volume, study_on
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.timeout(120)


def run_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGELOADER_")}
    return subprocess.run(
        [sys.executable, "-m", "imageloader", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.fixture
def study(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    return study_on(orthanc, tmp_path_factory.getbasetemp() / "synthetic")


def test_prefetch_study_writes_volumes_and_resumes(
    orthanc: OrthancServer, study: SyntheticStudy, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["prefetch", "--dicomweb", orthanc.dicomweb_url, "--study", study.study_uid]
    first = run_cli(*args, "--output", str(out), "--workers", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    total = SLICES + 2
    assert f"prefetching {total} images" in first.stdout
    assert "progress: " in first.stdout  # plain lines: stdout is not a terminal
    assert f"{total} loaded, 0 failed, 0 skipped" in first.stdout

    # The CT series: one volume, in position order (not instance-number order).
    volume = np.load(out / f"{study.ct_series_uid}.npy")
    assert volume.shape == (SLICES, 128, 128)
    assert np.array_equal(volume, local_ct_volume(study))
    manifest = json.loads((out / f"{study.ct_series_uid}.json").read_text())
    assert manifest["layout"] == "volume" and manifest["shape"] == [SLICES, 128, 128]
    assert manifest["geometry"]["spacing"][2] == pytest.approx(SPACING)
    assert manifest["geometry"]["regular"] is True
    sops = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in study.ct_files]
    assert [i.split("/instances/")[1].split("/")[0] for i in manifest["image_ids"]] == sops
    first_frame = manifest["frames"][0]
    assert first_frame["modules"]["imagePixelModule"]["rows"] == 128
    assert first_frame["modules"]["generalSeriesModule"]["series_instance_uid"] == (
        study.ct_series_uid
    )
    assert first_frame["image"]["data_type"] == str(volume.dtype)

    # The mixed series: one file per frame, each as the file holds it.
    mixed = json.loads((out / f"{study.mixed_series_uid}.json").read_text())
    assert mixed["layout"] == "frames"
    shapes = sorted(np.load(out / name).shape for name in mixed["files"])
    assert shapes == [(64, 64), (128, 128)]
    assert not (out / ".staging").exists()  # everything assembled, the staging area removed
    assert not list(out.rglob("*.tmp"))

    # A second run finds everything complete and loads nothing.
    stamp = (out / f"{study.ct_series_uid}.npy").stat().st_mtime_ns
    second = run_cli(*args, "--output", str(out))
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"0 loaded, 0 failed, {total} skipped" in second.stdout
    assert (out / f"{study.ct_series_uid}.npy").stat().st_mtime_ns == stamp

    # With one series gone, only that series is loaded again.
    (out / f"{study.ct_series_uid}.json").unlink()
    third = run_cli(*args, "--output", str(out))
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"{SLICES} loaded, 0 failed, 2 skipped" in third.stdout
    assert np.array_equal(np.load(out / f"{study.ct_series_uid}.npy"), volume)


def test_prefetch_one_series_without_output(orthanc: OrthancServer, study: SyntheticStudy) -> None:
    result = run_cli(
        "prefetch",
        "--dicomweb",
        orthanc.dicomweb_url,
        "--study",
        study.study_uid,
        "--series",
        study.ct_series_uid,
        "--concurrency",
        "4",
        "--workers",
        "1",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{SLICES} loaded, 0 failed" in result.stdout


def test_prefetch_unknown_study_exits_2(orthanc: OrthancServer) -> None:
    result = run_cli("prefetch", "--dicomweb", orthanc.dicomweb_url + "/nope", "--study", "1.2.3")
    assert result.returncode == 2
    assert "cannot list imageIds" in result.stderr


def test_info_of_a_wadors_frame(orthanc: OrthancServer, study: SyntheticStudy) -> None:
    ds = pydicom.dcmread(study.ct_files[0], stop_before_pixels=True)
    image_id = (
        f"wadors:{orthanc.dicomweb_url}/studies/{study.study_uid}/series/"
        f"{study.ct_series_uid}/instances/{ds.SOPInstanceUID}/frames/1"
    )
    result = run_cli("info", image_id)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["image_id"] == image_id
    assert document["image"]["rows"] == 128 and document["image"]["shape"] == [128, 128]
    plane = document["modules"]["imagePlaneModule"]
    assert plane["image_position_patient"][2] == pytest.approx(-100.0)
    assert document["modules"]["generalSeriesModule"]["series_instance_uid"] == (
        study.ct_series_uid
    )
