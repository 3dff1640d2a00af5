"""Every example runs as a user runs it (``python examples/NAME.py``), and says the right thing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from tests.integrations.series import SLICES, SyntheticStudy, local_ct_volume, study_on
from tests.integrations.servers import SAMPLES
from tests.processes import worker_children
from tests.servers import http_get, served
from tests.support.orthanc import OrthancServer, process_alive

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, *args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=cwd,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


@pytest.fixture
def study(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    return study_on(orthanc, tmp_path_factory.getbasetemp() / "synthetic")


def test_async_service_on_local_files() -> None:
    out = run_example("async_service.py")
    assert "10 concurrent requests for one image: 1 load; CT_small.dcm: 128x128 int16" in out
    assert "JPEG2000.dcm: 1024x256 int16" in out and "SC_rgb_rle.dcm: 100x100 uint8" in out
    assert "error NotFoundError: no such file" in out
    assert "5 loads for 16 requests" in out


def test_async_service_on_orthanc(orthanc: OrthancServer, study: SyntheticStudy) -> None:
    out = run_example(
        "async_service.py", "--dicomweb", orthanc.dicomweb_url, "--study", study.study_uid
    )
    assert out.count(": 128x128 int16 in ") >= SLICES
    assert f"{SLICES + 2} loads for {SLICES + 3 + 10} requests" in out


def test_bulk_prefetch_on_local_files_then_again(tmp_path: Path) -> None:
    out = run_example("bulk_prefetch.py", "--output", str(tmp_path))
    assert "16 loaded, 0 skipped, 0 failed" in out
    assert "volume (15, 10, 10) float32 spacing [10.0, 10.0, 5.0]" in out
    again = run_example("bulk_prefetch.py", "--output", str(tmp_path))
    assert "0 loaded, 16 skipped, 0 failed" in again


def test_bulk_prefetch_from_orthanc(
    orthanc: OrthancServer, study: SyntheticStudy, tmp_path: Path
) -> None:
    args = ["--output", str(tmp_path), "--dicomweb", orthanc.dicomweb_url, "--study"]
    out = run_example("bulk_prefetch.py", *args, study.study_uid)
    assert f"{SLICES + 2} loaded, 0 skipped, 0 failed" in out
    assert f"{study.ct_series_uid}: volume ({SLICES}, 128, 128) int16" in out
    assert f"{study.mixed_series_uid}: 2 frames of different sizes" in out
    assert np.array_equal(np.load(tmp_path / f"{study.ct_series_uid}.npy"), local_ct_volume(study))


def test_custom_scheme() -> None:
    out = run_example("custom_scheme.py")
    assert "64x64x1 float32, min=0, max=126" in out
    assert "10 concurrent loads, 1 file read" in out
    assert "missing file -> NotFoundError" in out


def test_dask_series_on_a_local_cluster() -> None:
    out = run_example("dask_series.py")
    assert "lazy (15, 10, 10) float32 in 4 chunks" in out
    assert "equal to the volume loaded locally: True" in out


def test_fastapi_app_serves_png_metadata_and_refuses_what_it_must() -> None:
    def command(port: int) -> list[str]:
        script = str(EXAMPLES / "fastapi_app.py")
        return [sys.executable, script, "--port", str(port), "--workers", "1"]

    with served(command) as (base, process):
        ct = quote(f"dicomfile:{SAMPLES / 'CT_small.dcm'}", safe="")
        status, png = http_get(f"{base}/images/{ct}?size=64&window_center=40&window_width=400")
        assert status == 200 and png.startswith(b"\x89PNG")
        # A JPEG-LS image: decoded in a worker process (uncompressed ones decode inline).
        jls = quote(f"dicomfile:{SAMPLES / 'MR_small_jpeg_ls_lossless.dcm'}", safe="")
        status, png = http_get(f"{base}/images/{jls}")
        assert status == 200 and png.startswith(b"\x89PNG")
        workers = set(worker_children(process.pid))  # the decode process that made it
        status, body = http_get(f"{base}/metadata/imagePixelModule/{ct}")
        assert status == 200 and json.loads(body)["rows"] == 128
        outside = quote("dicomfile:/etc/hostname", safe="")
        status, body = http_get(f"{base}/images/{outside}")
        assert status == 403 and json.loads(body)["error"] == "AccessDeniedError"
        elsewhere = quote("wadouri:http://192.0.2.1/wado?objectUID=1", safe="")
        assert http_get(f"{base}/images/{elsewhere}")[0] == 403
    assert workers and not [pid for pid in workers if process_alive(pid)]


@pytest.mark.parametrize("name", ["async_service.py", "bulk_prefetch.py"])
def test_a_study_the_server_does_not_hold_is_one_line_not_a_traceback(
    orthanc: OrthancServer, name: str, tmp_path: Path
) -> None:
    args = ["--dicomweb", orthanc.dicomweb_url, "--study", "1.2.3.999"]
    if name == "bulk_prefetch.py":
        args += ["--output", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "no instances found for study 1.2.3.999" in result.stderr
