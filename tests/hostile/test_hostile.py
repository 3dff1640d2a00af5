"""Hostile inputs through the public API hold the documented bounds (docs/security.md).

Each case builds a small crafted input (a codestream header that claims far more
than it holds, or a body that inflates to far more than it weighs), loads it with
``ImageLoader(max_web_workers=1).load_image(...)`` and the default ``Limits`` in a
child process under an address-space cap (:mod:`tests.hostile._tree`), and asserts:

- the outcome: the typed error (its class and the bound it names), or a load;
- the time the load took, and that the event loop kept running meanwhile (a 10 ms
  heartbeat never late by 0.25 s);
- the peak resident memory of the child's process tree (the child, its decode
  worker and the resource tracker) stays under :data:`BUDGET`, 1 GiB; the tree is
  killed as soon as it holds more, so a broken bound fails in seconds.

``build/hostile-bounds.json`` records what every case measured.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from . import craft
from ._tree import ADDRESS_SPACE, MIB, ROOT, Run, run_case

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the process tree from /proc"
)

#: The most the process tree of one load may hold, at its peak.
BUDGET = 1 << 30
#: The most a refused (or loaded) hostile input may take, loader and worker start-up
#: included (0.5-1 s here: a refusal reads a header; the rest is start-up).
LOAD_SECONDS = 10.0
CASE_TIMEOUT = 25.0

INSTANCE = "/studies/1/series/2/instances/3"


@dataclass(frozen=True)
class Case:
    """A crafted input (``build`` writes it and returns the child's spec) and its outcome."""

    build: Callable[[Path], dict[str, Any]]
    #: The error class expected (None: the image loads) and words its message holds.
    error: str | None
    match: str = ""


def dicomfile(frame: bytes, syntax: str, **pixel_module: Any) -> Callable[[Path], dict[str, Any]]:
    def build(tmp: Path) -> dict[str, Any]:
        path = craft.part10(tmp / "hostile.dcm", frame, craft.SYNTAX[syntax], **pixel_module)
        return {"image_id": f"dicomfile:{path}"}

    return build


def served(
    path: str, body: Callable[[], bytes], **headers: str
) -> Callable[[Path], dict[str, Any]]:
    def build(tmp: Path) -> dict[str, Any]:
        file = tmp / "body"
        file.write_bytes(body())
        return {
            "image_id": "{base}" + path,
            "routes": {path: {"file": str(file), "headers": headers}},
        }

    return build


def local(name: str, body: Callable[[Path], Path | bytes]) -> Callable[[Path], dict[str, Any]]:
    def build(tmp: Path) -> dict[str, Any]:
        made = body(tmp)
        if isinstance(made, bytes):
            path = tmp / name
            path.write_bytes(made)
        else:
            path = made
        scheme = "nifti" if name.endswith(".nii.gz") else "dicomfile"
        return {"image_id": f"{scheme}:{path}" + ("?frame=0" if scheme == "nifti" else "")}

    return build


def dicom_json(tmp: Path) -> dict[str, Any]:
    metadata, frame = tmp / "metadata.json", tmp / "frame"
    metadata.write_bytes(craft.dicom_json_instance(19_000_000))  # 76 MB
    frame.write_bytes(bytes(64 * 64 * 2))
    return {
        "image_id": "wadors:{base}" + INSTANCE + "/frames/1",
        "routes": {
            INSTANCE + "/metadata": {
                "file": str(metadata),
                "headers": {"Content-Type": "application/dicom+json"},
            },
            INSTANCE + "/frames/1": {
                "file": str(frame),
                "headers": {"Content-Type": "application/octet-stream"},
            },
        },
    }


def drip(tmp: Path) -> dict[str, Any]:
    body = tmp / "body"
    body.write_bytes(bytes(1000))
    route = {"file": str(body), "headers": {"Content-Type": "image/png"}, "drip": True}
    # The default deadline is 120 s; the case shortens it, as a service may, so that
    # the suite does not wait two minutes for what test_http checks of the default.
    return {
        "image_id": "{base}/drip.png",
        "routes": {"/drip.png": route},
        "http": {"total_timeout": 2},
    }


def device(image_id: str, **access: Any) -> Callable[[Path], dict[str, Any]]:
    def build(tmp: Path) -> dict[str, Any]:
        return {"image_id": image_id, **({"access": access} if access else {})}

    return build


BYTES = "max_frame_bytes"
PNG = {"Content-Type": "image/png"}
TOO_LARGE = "ImageTooLargeError"

CASES = {
    # -- time and the file system ---------------------------------------------------------
    # A byte every 0.2 s never trips the 30 s read timeout; the total deadline ends it.
    "slow-drip": Case(drip, "LoadTimeoutError", "timed out"),
    # Devices have no size to check and never end (before: read until MemoryError).
    "dicomfile-dev-zero": Case(device("dicomfile:/dev/zero"), "AccessDeniedError", "regular"),
    # A policy naming hosts but no roots (before: nifti:/dev/zero read to 2.6 GB).
    "nifti-no-roots": Case(
        device("nifti:/dev/zero?frame=0", schemes=["nifti"], hosts=["127.0.0.1"]),
        "AccessDeniedError",
        "names no roots",
    ),
    # -- the codestream's own header (decode/syntaxes.py, decode/worker.py) --------------
    # The first case: 4096² of 16,384 components in a 50 KB SIZ segment
    # (before: the decode worker grew to the address-space cap, 4 GiB here, 7.6 GB
    # uncapped, and failed after 10 s with a DecodeError).
    "j2k-16384-components": Case(
        dicomfile(craft.j2k(4096, 4096, 16384, 16), "j2k", rows=4096, columns=4096),
        TOO_LARGE,
        "16384 16-bit components",
    ),
    # 65,535 tiles of one pixel: OpenJPEG's per-tile bookkeeping, ~10 KB each, from
    # 145 bytes (before: loaded, 728 MiB).
    "j2k-65535-tiles": Case(
        dicomfile(craft.j2k(255, 257, 1, 16, tile=(1, 1), levels=0), "j2k", rows=255, columns=257),
        TOO_LARGE,
        "65535 tiles",
    ),
    # Wider samples than the pixel module allocates (before: loaded, masked to 16 bits).
    "j2k-precision-over-bits-allocated": Case(
        dicomfile(craft.j2k(2048, 2048, 1, 24), "j2k", rows=2048, columns=2048),
        "DecodeError",
        "24-bit samples but the pixel module says BitsAllocated 16",
    ),
    # SOF claiming 65535² × 4 over a 512² pixel module: the existing pixel bound.
    "jpeg-sof-65535x65535x4": Case(
        dicomfile(craft.jpeg(65535, 65535, 4), "jpeg", rows=512, columns=512, bits=8),
        TOO_LARGE,
        "65535x65535 pixels",
    ),
    # 4 components where the pixel module has 1: 256 MiB decoded by three codecs in
    # turn, each result refused afterwards (before: 1.6 GiB, 7.7 s).
    "jpeg-sof-components": Case(
        dicomfile(craft.jpeg(8192, 8192, 4), "jpeg", rows=8192, columns=8192, bits=8),
        TOO_LARGE,
        "4 8-bit components",
    ),
    # The pixel module itself: 16384² RGB passes max_frame_pixels (before: loaded,
    # 3.1 GiB over the main process and the worker, 12.6 s).
    "jpeg-16384x16384-rgb": Case(
        dicomfile(
            craft.jpeg(16384, 16384, 3), "jpeg", rows=16384, columns=16384, samples=3, bits=8
        ),
        TOO_LARGE,
        BYTES,
    ),
    "jpeg-ls-sof55-65535x65535": Case(
        dicomfile(craft.jpeg_ls(65535, 65535, 1, 16), "jpeg-ls", rows=512, columns=512),
        TOO_LARGE,
        "65535x65535 pixels",
    ),
    # A frame header of 0 x 0 and the size in an oversize-dimension LSE segment.
    "jpeg-ls-lse-oversize": Case(
        dicomfile(
            craft.jpeg_ls(0, 0, 1, 16, oversize=(65535, 65535)), "jpeg-ls", rows=512, columns=512
        ),
        TOO_LARGE,
        "65535x65535 pixels",
    ),
    # 3 components of 16 bits where the pixel module has 1 (before: 401 MiB, 6.6 s).
    "jpeg-ls-sof55-components": Case(
        dicomfile(craft.jpeg_ls(4096, 4096, 3, 16), "jpeg-ls", rows=4096, columns=4096),
        TOO_LARGE,
        "3 16-bit components",
    ),
    # 15 segments of 1 MiB of replicate runs where an 8-bit greyscale frame has one:
    # each decodes to 64 MiB (before: 1.1 GiB in the worker).
    "rle-15-segments": Case(
        dicomfile(craft.rle(15, 1 << 20), "rle", rows=4096, columns=4096, bits=8),
        "DecodeError",
        "RLE header names 15 segments but the pixel module needs 1",
    ),
    # The right number of segments, but one that decodes to 1 GiB for a 16 MiB frame:
    # imagecodecs sized its output by the data, not the frame (before: loaded by the
    # next codec after a 1.1 GiB detour; now it decodes into a buffer of the frame's
    # size, refuses the overrun, and the next codec loads the frame).
    "rle-segment-overrun": Case(
        dicomfile(craft.rle(1, 16 << 20), "rle", rows=4096, columns=4096, bits=8),
        None,
    ),
    # -- bodies that inflate (outside the decoder) -----------------------------------------
    # A deflated Part 10 object of one 100 MB frame, 98 KB on disk (before: loaded,
    # 392 MiB).
    "deflated-part10-100MB": Case(
        local("deflated.dcm", lambda tmp: craft.deflated_part10(tmp / "d.dcm", 7072, 7072, 1)),
        TOO_LARGE,
        BYTES,
    ),
    # A deflated Part 10 object of an empty element then 250 MB of zeros, 260 KB on
    # disk: within the inflated-size limit, but pydicom parses the zeros as 33 million
    # empty elements (before: uncancellable CPU on a thread of the loop's default
    # executor, 29 s for 100 MB, so ~70 s). Stopped by the parse's read cap (3.7 s).
    "deflated-part10-zeros-250MB": Case(
        local("zeros.dcm", lambda tmp: craft.deflated_zeros(250 << 20)),
        TOO_LARGE,
        "elements to read",
    ),
    "png-16384x16384-rgba": Case(
        served("/big.png", lambda: craft.png_rgba(16384, 16384), **PNG),
        TOO_LARGE,
    ),
    "gzip-body-900MiB": Case(
        served(
            "/zeros.png",
            lambda: craft.gzip_bomb(900 << 20),
            **PNG,
            **{"Content-Encoding": "gzip"},
        ),
        TOO_LARGE,
    ),
    "nifti-gz-2.4GB": Case(
        local("volume.nii.gz", lambda tmp: craft.nifti_gz((1024, 1024, 600), "int32")),
        TOO_LARGE,
    ),
    "dicom-json-76MB": Case(dicom_json, TOO_LARGE),
}

_RESULTS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module", autouse=True)
def record() -> Iterator[None]:
    """Write what every case measured to build/hostile-bounds.json."""
    yield
    if _RESULTS:
        out = ROOT / "build" / "hostile-bounds.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(_RESULTS, indent=2, sort_keys=True))


def _record(name: str, run: Run) -> None:
    _RESULTS[name] = {
        "outcome": run.report.get("outcome"),
        "error": run.report.get("type"),
        "message": str(run.report.get("message", ""))[:300],
        "load_seconds": round(float(run.report.get("seconds", run.seconds)), 2),
        "wall_seconds": round(run.seconds, 2),
        "peak_tree_mib": round(run.peak / MIB),
        "processes": run.processes,
        "loop_lag_ms": round(1000 * float(run.report.get("loop_lag", 0.0))),
    }


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_hostile_input_holds_the_bounds(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spec = case.build(tmp_path)
    run = run_case(spec, tmp_path, timeout=CASE_TIMEOUT, kill_above=BUDGET)
    _record(request.node.callspec.id, run)
    report = run.report
    assert run.peak < BUDGET, run.summary()
    if case.error is None:
        assert report["outcome"] == "ok", run.summary()
    else:
        assert report["outcome"] == "raised" and report["typed"], run.summary()
        assert report["type"] == case.error, run.summary()
        assert case.match in report["message"], run.summary()
    assert report["seconds"] < LOAD_SECONDS, run.summary()
    # The event loop kept running: a 10 ms heartbeat was never late by 0.25 s.
    assert report["loop_lag"] < 0.25, run.summary()
    # The cap was there (prlimit, or RLIMIT_AS when prlimit is missing).
    assert report["address_space"] == ADDRESS_SPACE
