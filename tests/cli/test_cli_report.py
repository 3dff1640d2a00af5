"""Failure lines (the imageId once, a short reason) and the ``--report`` document."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageloader.cli.report import (
    LINE_LIMIT,
    failure_line,
    failure_lines,
    report_document,
    short_reason,
)
from imageloader.errors import DecodeError, FetchError, LoadTimeoutError, NotFoundError
from imageloader.output import PrefetchReport, WrittenSeries

FRAME = (
    "wadors:http://pacs:8042/dicom-web/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/frames/1"
)
FRAME_URL = FRAME.removeprefix("wadors:")
FILE = "dicomfile:/data/ct/slice-001.dcm?frame=2"


@pytest.mark.parametrize(
    ("image_id", "error", "reason"),
    [
        (
            FILE,
            NotFoundError("no such file", image_id=FILE, url="/data/ct/slice-001.dcm"),
            "NotFoundError: no such file",
        ),
        (
            FRAME,
            FetchError("Bad Gateway", image_id=FRAME, url=FRAME_URL, status=502),
            "FetchError: Bad Gateway (HTTP 502)",
        ),
        (
            # Another URL than the frame's: kept, relative to what the two share.
            FRAME,
            NotFoundError(
                "not found",
                image_id=FRAME,
                url=FRAME_URL.replace("/frames/1", "/metadata"),
                status=404,
            ),
            "NotFoundError: not found (HTTP 404) from …/metadata",
        ),
        (
            FRAME,
            LoadTimeoutError(f"timed out fetching {FRAME_URL}", image_id=FRAME),
            "LoadTimeoutError: timed out fetching …",
        ),
        (
            FILE,
            DecodeError(
                "cannot read '/data/ct/slice-001.dcm': [Errno 13] Permission denied:\n"
                "'/data/ct/slice-001.dcm'",
                image_id=FILE,
            ),
            "DecodeError: cannot read …: [Errno 13] Permission denied: …",
        ),
        (
            "nosuchscheme:whatever",
            None,
            "UnknownSchemeError: no image loader registered for scheme 'nosuchscheme'",
        ),
    ],
)
def test_the_reason_does_not_repeat_the_image_id_or_its_url(
    image_id: str, error: Exception | None, reason: str
) -> None:
    described = "UnknownSchemeError: no image loader registered for scheme 'nosuchscheme'"
    assert short_reason(image_id, error, described) == reason
    line = failure_line(image_id, reason)
    assert line == f"FAILED {image_id}: {reason}"
    assert line.count(image_id) == 1 and "\n" not in line


def test_a_long_reason_is_cut_with_an_ellipsis_but_never_the_image_id() -> None:
    reason = "DecodeError: " + "the codec said something long " * 20
    line = failure_line(FILE, reason)
    assert len(line) == LINE_LIMIT and line.endswith("…")
    assert line.startswith(f"FAILED {FILE}: DecodeError: the codec said")

    long_id = "wadors:http://pacs/" + "x" * 300
    line = failure_line(long_id, reason)
    assert line.startswith(f"FAILED {long_id}: DecodeError") and line.endswith("…")
    assert len(line) < len(long_id) + 100  # some of the reason, not all of it


def test_failure_lines_put_images_first_then_series() -> None:
    report = PrefetchReport(total=2)
    report.failures["series:1.2"] = "OutputConflictError: series 1.2 is already complete"
    error = NotFoundError("no such file", image_id=FILE, url="/data/ct/slice-001.dcm")
    report.failures[FILE] = "NotFoundError: no such file from /data/ct/slice-001.dcm"
    report.errors[FILE] = error
    assert failure_lines(report) == [
        f"FAILED {FILE}: NotFoundError: no such file",
        "FAILED series:1.2: OutputConflictError: series 1.2 is already complete",
    ]


def test_report_document_statuses_and_totals(tmp_path: Path) -> None:
    ok, failed, skipped, resumed, pending = (f"x:{n}" for n in range(5))
    report = PrefetchReport(total=5, loaded=1, skipped=1, resumed=1, bytes=32, interrupted=True)
    report.outcomes = {ok: "loaded", skipped: "skipped", resumed: "resumed"}
    report.image_series[ok] = "1.2"
    report.failures[failed] = "FetchError: no (HTTP 503) from http://origin/x/1"
    report.failures["series:1.3"] = "OSError: disk full"
    report.held = ["1.4"]
    report.written.append(
        WrittenSeries("1.2", "volume", 1, tmp_path / "1.2.json", tmp_path / "1.2.npy")
    )
    document = report_document(
        report,
        [ok, failed, skipped, resumed, pending, ok],
        exit_code=130,
        started_at="2024-01-01T00:00:00+00:00",
        elapsed=1.23456,
        source={"ids": "ids.txt"},
        output=str(tmp_path),
    )
    assert [(e["image_id"], e["status"]) for e in document["images"]] == [
        (ok, "ok"),
        (failed, "failed"),
        (skipped, "skipped"),
        (resumed, "skipped"),
        (pending, "pending"),
    ]
    by_id = {e["image_id"]: e for e in document["images"]}
    assert by_id[ok]["series"] == "1.2"
    assert (by_id[failed]["error_type"], by_id[failed]["message"]) == (
        "FetchError",
        "no (HTTP 503) from http://origin/x/1",
    )
    assert by_id[resumed]["message"] == "staged by an earlier run"
    assert document["totals"] == {
        "images": 5,
        "ok": 1,
        "failed": 1,
        "skipped": 2,
        "pending": 1,
        "complete_on_disk": 1,
        "resumed": 1,
        "bytes_decoded": 32,
        "series_written": 1,
        "series_held": 1,
        "series_failed": 1,
    }
    assert document["series"]["failed"] == [
        {"series": "1.3", "error_type": "OSError", "message": "disk full"}
    ]
    assert document["series"]["held"] == ["1.4"]
    assert document["elapsed_seconds"] == 1.235 and document["exit_code"] == 130
