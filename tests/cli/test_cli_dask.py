"""``imageloader prefetch --dask-scheduler``: the report and the staging area on that path.

The Dask path runs the local path's engine (``PrefetchJob``), so its ``--report`` says
the same per image (loaded, skipped, failed) and an empty staging area goes the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import LocalCluster

from tests.cli.test_cli_orthanc import run_cli
from tests.integrations.servers import SAMPLES

pytestmark = pytest.mark.timeout(180)

CT = SAMPLES / "CT_small.dcm"
RTDOSE = SAMPLES / "rtdose.dcm"


@pytest.fixture
def scheduler() -> Iterator[str]:
    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=True,
    ) as cluster:
        yield cluster.scheduler_address


def test_dask_prefetch_reports_loaded_skipped_and_failed_images(
    scheduler: str, tmp_path: Path
) -> None:
    missing = f"dicomfile:{SAMPLES}/no-such-file.dcm"
    dose = [f"dicomfile:{RTDOSE}?frame={n}" for n in range(1, 16)]
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(dose))
    out, report_file = tmp_path / "out", tmp_path / "report.json"
    base = ["prefetch", "--output", str(out), "--dask-scheduler", scheduler]

    first = run_cli(*base, "--ids", str(ids), "--report", str(report_file))
    assert first.returncode == 0, first.stdout + first.stderr
    assert not (out / ".staging").exists()
    report = json.loads(report_file.read_text())
    assert {e["status"] for e in report["images"]} == {"ok"}
    assert report["totals"]["ok"] == 15 and report["totals"]["series_written"] == 1

    ids.write_text("\n".join([f"dicomfile:{CT}", *dose, missing]))
    second = run_cli(*base, "--ids", str(ids), "--report", str(report_file))
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"FAILED {missing}: NotFoundError: no such file\n" in second.stderr
    report = json.loads(report_file.read_text())
    statuses = {e["image_id"]: e["status"] for e in report["images"]}
    assert statuses == (
        {f"dicomfile:{CT}": "ok", missing: "failed"} | dict.fromkeys(dose, "skipped")
    )
    assert report["totals"]["complete_on_disk"] == 15 and report["exit_code"] == 1
    assert not (out / ".staging").exists()
