"""``imageloader info -``: a DICOM file read from standard input, as a file in memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.dicom._dicomdata import data_file


def info(*args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGELOADER_")}
    return subprocess.run(
        [sys.executable, "-m", "imageloader", "info", *args],
        input=stdin,
        capture_output=True,
        timeout=90,
        env=env,
        check=False,
    )


def test_info_of_standard_input_equals_info_of_the_file() -> None:
    path = data_file("emri_small.dcm")  # 10 frames
    with open(path, "rb") as f:
        raw = f.read()
    piped = info("-", "--frame", "3", "--compact", stdin=raw)
    assert piped.returncode == 0, piped.stderr
    from_file = info(f"dicomfile:{path}?frame=3", "--compact", stdin=b"")
    assert from_file.returncode == 0, from_file.stderr
    a, b = json.loads(piped.stdout), json.loads(from_file.stdout)
    assert a["image_id"] == "dicomfile:0?frame=3"
    assert a["modules"] == b["modules"]
    fields = {
        k: v
        for k, v in a["image"].items()
        if k not in ("image_id", "load_time_ms", "decode_time_ms")
    }
    assert fields == {k: v for k, v in b["image"].items() if k in fields}
    assert fields["rows"] == 64


def test_junk_and_missing_frames_on_standard_input_are_typed_errors() -> None:
    junk = info("-", stdin=b"not dicom" * 50)
    assert junk.returncode == 1 and not junk.stdout
    assert b"DecodeError: not a DICOM Part 10 object" in junk.stderr
    with open(data_file("CT_small.dcm"), "rb") as f:
        past = info("-", "--frame", "2", stdin=f.read())
    assert past.returncode == 1
    assert b"NotFoundError" in past.stderr and b"frame 2 of 1" in past.stderr
    misuse = info("dicomfile:/x.dcm", "--frame", "2", stdin=b"")
    assert misuse.returncode == 2 and b"--frame goes with -" in misuse.stderr
