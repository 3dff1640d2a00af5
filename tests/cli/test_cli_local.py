"""The ``imageloader`` command on local files and a local origin, run as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_cli_orthanc import run_cli
from tests.integrations.servers import SAMPLES, run_origin
from tests.processes import worker_children
from tests.support.orthanc import process_alive

pytestmark = pytest.mark.timeout(120)

CT = SAMPLES / "CT_small.dcm"
RTDOSE = SAMPLES / "rtdose.dcm"  # 15 frames, 10x10, one series


def test_demo_still_works(tmp_path: Path) -> None:
    montage = tmp_path / "montage.png"
    result = run_cli("demo", "--output", str(montage), "--workers", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CT_small.dcm" in result.stdout
    assert montage.read_bytes().startswith(b"\x89PNG")


def test_prefetch_ids_continues_past_failures(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    missing = f"dicomfile:{SAMPLES}/no-such-file.dcm"
    lines = [
        "# comments and blank lines are skipped",
        f"dicomfile:{CT}",
        "",
        missing,
        *(f"dicomfile:{RTDOSE}?frame={n}" for n in range(15, 0, -1)),
        "nosuchscheme:whatever",
    ]
    ids.write_text("\n".join(lines))
    out = tmp_path / "out"
    result = run_cli("prefetch", "--ids", str(ids), "--output", str(out), "--workers", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "16 loaded, 2 failed" in result.stdout
    # One line per failed image, on stderr: the imageId once, then the reason.
    assert "FAILED" not in result.stdout
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 2, failed
    first, second = sorted(failed)
    assert first == f"FAILED {missing}: NotFoundError: no such file"
    assert second.startswith(
        "FAILED nosuchscheme:whatever: UnknownSchemeError: "
        "no image loader registered for scheme 'nosuchscheme' (registered: dicomfile, "
    )
    manifests = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert len(manifests) == 2  # CT_small's series and RTDOSE's
    dose = next(m for m in manifests.values() if m["shape"] == [15, 10, 10])
    # Frames listed last-first in the file, written in scan order.
    assert dose["image_ids"] == [f"dicomfile:{RTDOSE}?frame={n}" for n in range(1, 16)]
    volume = np.load(out / f"{dose['series']}.npy")
    assert volume.dtype == np.float32 and volume.shape == (15, 10, 10)
    # Both series written, nothing held back: no staging area is left behind.
    assert not (out / ".staging").exists()


def test_prefetch_report_lists_every_image(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    missing = f"dicomfile:{SAMPLES}/no-such-file.dcm"
    dose = [f"dicomfile:{RTDOSE}?frame={n}" for n in range(1, 16)]
    ids.write_text("\n".join([f"dicomfile:{CT}", missing, *dose]))
    out, report_file = tmp_path / "out", tmp_path / "report.json"
    args = ["prefetch", "--ids", str(ids), "--output", str(out), "--report", str(report_file)]
    first = run_cli(*args, "--workers", "0")
    assert first.returncode == 1, first.stdout + first.stderr
    assert f"report: {report_file}" in first.stdout
    report = json.loads(report_file.read_text())
    assert report["exit_code"] == 1 and report["interrupted"] is False
    assert report["error"] is None and report["elapsed_seconds"] > 0
    assert report["source"]["ids"] == str(ids) and report["output"] == str(out)
    assert report["totals"] | {"bytes_decoded": 0} == {
        "images": 17,
        "ok": 16,
        "failed": 1,
        "skipped": 0,
        "pending": 0,
        "complete_on_disk": 0,
        "resumed": 0,
        "bytes_decoded": 0,
        "series_written": 2,
        "series_held": 0,
        "series_failed": 0,
    }
    assert report["totals"]["bytes_decoded"] == 128 * 128 * 2 + 15 * 10 * 10 * 4
    images = {entry["image_id"]: entry for entry in report["images"]}
    assert [entry["image_id"] for entry in report["images"]] == [f"dicomfile:{CT}", missing, *dose]
    # The full message, imageId-free lines are only for the terminal.
    assert images[missing] == {
        "image_id": missing,
        "status": "failed",
        "series": None,
        "error_type": "NotFoundError",
        "message": f"no such file from {SAMPLES}/no-such-file.dcm",
    }
    assert images[dose[0]]["status"] == "ok" and images[dose[0]]["error_type"] is None
    written = {w["series"]: w for w in report["series"]["written"]}
    assert written[images[dose[0]]["series"]]["frames"] == 15
    assert written[images[dose[0]]["series"]]["layout"] == "volume"

    # A rerun skips what is complete on disk and reports it so.
    second = run_cli(*args, "--workers", "0")
    assert second.returncode == 1, second.stdout + second.stderr
    again = json.loads(report_file.read_text())
    statuses = {entry["image_id"]: entry["status"] for entry in again["images"]}
    assert statuses == {missing: "failed"} | dict.fromkeys([f"dicomfile:{CT}", *dose], "skipped")
    assert again["totals"]["skipped"] == again["totals"]["complete_on_disk"] == 16
    skipped = next(e for e in again["images"] if e["status"] == "skipped")
    assert skipped["message"] == "complete on disk from an earlier run"
    assert not list(tmp_path.glob(".report.json.*"))  # written atomically, nothing left


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"dicomfile:{RTDOSE}?frame={n}" for n in range(1, 16)))
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "imageloader", "prefetch", "--ids", str(ids), "--workers", "0"],
        stdout=terminal,
        stderr=subprocess.PIPE,
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert process.wait(30) == 0, process.stderr.read() if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    assert b"\r[########################] 15/15 100%" in shown
    assert b"img/s" in shown and b"MB/s" in shown and b"ETA" in shown
    assert b"progress:" not in shown  # plain lines are for pipes and files


def test_info_of_a_local_file_and_of_a_missing_one() -> None:
    result = run_cli("info", f"dicomfile:{CT}")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["image"]["rows"] == 128 and document["image"]["data_type"] == "int16"
    assert document["modules"]["imagePixelModule"]["bits_allocated"] == 16
    assert document["modules"]["modalityLutModule"]["rescale_intercept"] == -1024
    missing = run_cli("info", "dicomfile:/no/such/file.dcm")
    assert missing.returncode == 1
    assert "NotFoundError" in missing.stderr and not missing.stdout


async def _progress_until(process: asyncio.subprocess.Process, loaded: int) -> set[int]:
    """Read progress lines until ``loaded`` images are done; the decode workers seen."""
    assert process.stdout is not None
    workers: set[int] = set()
    while True:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, "the CLI ended before it was interrupted"
        workers |= set(worker_children(process.pid))
        if line.startswith(b"progress: ") and workers:
            done = int(line.split()[1].split(b"/")[0])
            if done >= loaded:
                return workers


async def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path: Path) -> None:
    async with run_origin() as origin:
        # Forty distinct objects, each answered after 0.3 s, two at a time: ~6 s in all.
        # JPEG-LS, so that a decode worker process runs (uncompressed frames decode
        # on a thread of the CLI's own process).
        ids = [
            origin.wadouri("MR_small_jpeg_ls_lossless.dcm", delay="0.3", n=str(n))
            for n in range(40)
        ]
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("\n".join(ids))
        out = tmp_path / "out"
        base = ["-m", "imageloader", "prefetch", "--ids", str(ids_file), "--output", str(out)]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *base,
            "--concurrency=2",
            "--workers=1",
            "--progress-interval=0.05",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            workers = await _progress_until(process, loaded=4)
            process.send_signal(signal.SIGINT)
            stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 130, stdout.decode() + stderr.decode()
        text = stdout.decode()
        assert "interrupted in" in text and "failed" in text
        assert b"interrupted: stopping" in stderr
        # The decode worker exited with the CLI, and no load ran on after Ctrl-C.
        assert workers and not [pid for pid in workers if process_alive(pid)]
        fetched = sum(origin.hits.values())
        assert 4 <= fetched < 40
        assert not list(out.rglob("*.tmp"))
        staged = len(list((out / ".staging").rglob("*.npy")))
        assert staged >= 4

        # The rerun loads only what is missing, then writes the series.
        rerun = await asyncio.create_subprocess_exec(
            sys.executable,
            *base,
            "--concurrency=16",
            "--workers=1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(rerun.communicate(), 60)
        assert rerun.returncode == 0, stdout.decode() + stderr.decode()
        assert (
            f"{40 - staged} loaded, 0 failed, 0 skipped (complete on disk), {staged} resumed"
            in (stdout.decode())
        )
        assert sum(origin.hits.values()) == fetched + 40 - staged
    (manifest,) = out.glob("*.json")
    assert sorted(json.loads(manifest.read_text())["image_ids"]) == sorted(ids)
    assert np.load(manifest.with_suffix(".npy")).shape == (40, 64, 64)
