"""``imageloader prefetch --query`` (a QIDO-RS series search) and ``--list``, on a real Orthanc."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cli.test_cli_orthanc import run_cli
from tests.integrations.series import SLICES, SyntheticStudy, study_on
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.timeout(120)

#: CT_small.dcm: 128 x 128, one sample, 16 bits allocated; MR_small.dcm: 64 x 64.
CT_FRAME, MR_FRAME = 128 * 128 * 2, 64 * 64 * 2
LINE = re.compile(
    r"study (\S+) series (\S+) modality (\S+): (\d+) instances, (\d+) frames, (\d+) bytes"
)


@pytest.fixture
def study(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    return study_on(orthanc, tmp_path_factory.getbasetemp() / "synthetic")


def listed(stdout: str) -> dict[str, tuple[str, str, int, int, int]]:
    """``--list``'s series lines: series UID -> (study, modality, instances, frames, bytes)."""
    return {m[2]: (m[1], m[3], int(m[4]), int(m[5]), int(m[6])) for m in LINE.finditer(stdout)}


def test_query_prefetches_the_matching_series(
    orthanc: OrthancServer, study: SyntheticStudy, tmp_path: Path
) -> None:
    base = orthanc.dicomweb_url
    query = f"Modality=CT&SeriesInstanceUID={study.ct_series_uid}"
    report = tmp_path / "report.json"
    out = tmp_path / "out"
    result = run_cli(
        "prefetch", "--dicomweb", base, "--query", query, "--output", str(out),
        "--report", str(report), "--workers", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"prefetching {SLICES} images" in result.stdout
    assert f"{SLICES} loaded, 0 failed" in result.stdout
    assert sorted(p.name for p in out.glob("*.json")) == [f"{study.ct_series_uid}.json"]
    document = json.loads(report.read_text())
    assert document["exit_code"] == 0 and document["totals"]["images"] == SLICES


def test_query_modality_ct_in_the_study(orthanc: OrthancServer, study: SyntheticStudy) -> None:
    # Orthanc takes a series' Modality from its first instance: the mixed series
    # (CT_small, then MR_small) is CT too. --list says which series match.
    base = orthanc.dicomweb_url
    result = run_cli(
        "prefetch", "--dicomweb", base, "--query", "Modality=CT", "--study", study.study_uid,
        "--list",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    series = listed(result.stdout)
    assert series[study.ct_series_uid] == (study.study_uid, "CT", SLICES, SLICES, SLICES * CT_FRAME)
    assert all(s[0] == study.study_uid and s[1] == "CT" for s in series.values())
    # Without --study, the search spans every study on the server.
    everywhere = run_cli("prefetch", "--dicomweb", base, "--query", "Modality=CT", "--list")
    assert everywhere.returncode == 0, everywhere.stdout + everywhere.stderr
    assert listed(everywhere.stdout)[study.ct_series_uid] == series[study.ct_series_uid]
    # And the prefetch loads every frame of every matching series.
    run = run_cli(
        "prefetch", "--dicomweb", base, "--query", "Modality=CT", "--study", study.study_uid,
        "--workers", "1",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    frames = sum(s[3] for s in series.values())
    assert f"{frames} loaded, 0 failed" in run.stdout


def test_list_of_a_study_prints_each_series_and_writes_nothing(
    orthanc: OrthancServer, study: SyntheticStudy, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "prefetch", "--dicomweb", orthanc.dicomweb_url, "--study", study.study_uid,
        "--list", "--output", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    series = listed(result.stdout)
    assert series == {
        study.ct_series_uid: (study.study_uid, "CT", SLICES, SLICES, SLICES * CT_FRAME),
        study.mixed_series_uid: (study.study_uid, "CT", 2, 2, CT_FRAME + MR_FRAME),
    }
    total = SLICES * CT_FRAME + CT_FRAME + MR_FRAME
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"total: 2 series, {SLICES + 2} instances, {SLICES + 2} frames, "
                           f"{total} bytes")  # fmt: skip
    assert "loaded" not in result.stdout and "prefetching" not in result.stdout
    assert not out.exists()


def test_list_of_one_series(orthanc: OrthancServer, study: SyntheticStudy) -> None:
    result = run_cli(
        "prefetch", "--dicomweb", orthanc.dicomweb_url, "--study", study.study_uid,
        "--series", study.mixed_series_uid, "--list",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert listed(result.stdout) == {
        study.mixed_series_uid: (study.study_uid, "CT", 2, 2, CT_FRAME + MR_FRAME)
    }
    assert "total: 1 series, 2 instances, 2 frames" in result.stdout


def test_a_query_that_matches_nothing_exits_2(
    orthanc: OrthancServer, study: SyntheticStudy, tmp_path: Path
) -> None:
    base = orthanc.dicomweb_url
    report = tmp_path / "report.json"
    result = run_cli(
        "prefetch", "--dicomweb", base, "--query", "Modality=XA", "--study", study.study_uid,
        "--report", str(report),
    )  # fmt: skip
    message = f"no series match query Modality=XA in study {study.study_uid} at {base}"
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"imageloader prefetch: {message}\n"
    assert "prefetching" not in result.stdout
    assert json.loads(report.read_text())["error"] == message
    listing = run_cli("prefetch", "--dicomweb", base, "--query", "PatientID=NOBODY-XYZ", "--list")
    assert listing.returncode == 2
    assert f"no series match query PatientID=NOBODY-XYZ at {base}" in listing.stderr


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("Modalty=CT", "--query: unknown DICOM keyword or tag: 'Modalty'"),
        ("Modality=CT&limit=3", "--query: unknown DICOM keyword or tag: 'limit'"),
        ("", "--query: empty query: ''"),
    ],
)
def test_a_bad_query_is_a_usage_error(query: str, message: str, tmp_path: Path) -> None:
    # Checked before any request: the server is never asked.
    result = run_cli("prefetch", "--dicomweb", "http://127.0.0.1:9/nowhere", "--query", query)
    assert result.returncode == 2
    assert result.stderr == f"imageloader prefetch: {message}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dicomweb", "http://h/"], "--dicomweb needs --study or --query"),
        (
            ["--dicomweb", "http://h/", "--query", "Modality=CT", "--series", "1.2"],
            "--series needs --study",
        ),
        (["--ids", "f.txt", "--list"], "--query and --list go with --dicomweb"),
        (
            ["--dicomweb", "http://h/", "--study", "1.2", "--list", "--report", "r.json"],
            "--list writes no --report",
        ),
        (
            ["--dicomweb", "http://h/", "--study", "x/y", "--query", "Modality=CT"],
            "--query: study is not a DICOM UID: 'x/y'",
        ),
    ],
)
def test_argument_combinations(args: list[str], message: str) -> None:
    result = run_cli("prefetch", *args)
    assert result.returncode == 2
    assert result.stderr == f"imageloader prefetch: {message}\n"


def test_help_describes_query_and_list() -> None:
    result = run_cli("prefetch", "--help")
    assert result.returncode == 0
    assert "--query QUERY" in result.stdout and "--list" in result.stdout
    assert "no series match query" in result.stdout
