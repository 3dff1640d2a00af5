"""Decoding on many threads of one process at once.

A decode pool in a daemonic process (a Dask worker), which cannot have children,
decodes on ``max_web_workers`` threads of the process. Every decode path must then
leave process-wide state alone: each result equals the single-threaded one, each
failure is the same typed error, and ``sys.unraisablehook``, the warnings filters
and Pillow's pixel limit are what they were before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import multiprocessing
import random
import re
import struct
import sys
import threading
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np
import pytest
from PIL import Image as PILImage

from imageloader.decode import codecs
from imageloader.decode.codecs import default_registry
from imageloader.decode.params import DecodedFrame, DecodeOptions, PixelParams
from imageloader.decode.pool import DecodePool
from imageloader.decode.worker import decode_frame
from imageloader.errors import DecodeError, ImageLoaderError, ImageTooLargeError
from imageloader.web import WebPixels, decode_web_image
from tests.corpus import CORNERSTONE

from .dicom_frames import frame, params_from_dataset, read

pytestmark = pytest.mark.timeout(180)

THREADS = 8
#: Decodes in one threaded run (every case, repeated, in a shuffled order).
DECODES = 320
HTJ2K = "1.2.840.10008.1.2.4.201"
WEB_LIMIT = 1 << 28


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]


def _dicom(name: str, path: str, **kwargs: Any) -> Case:
    ds = read(CORNERSTONE / path)
    params = params_from_dataset(ds)
    return _frame_case(name, frame(ds, 0), params, **kwargs)


def _frame_case(
    name: str, data: bytes, params: PixelParams, max_pixels: int = 1 << 28, rgba: bool = False
) -> Case:
    options = DecodeOptions(use_rgba=rgba)
    return Case(name, decode_frame, (data, params, options, name, max_pixels))


def _web(name: str, data: bytes, max_pixels: int = WEB_LIMIT, rgba: bool = False) -> Case:
    return Case(name, decode_web_image, (data, name, rgba, max_pixels))


def _damaged(data: bytes, seed: int) -> bytes:
    """Four bytes of the entropy-coded data changed; the headers (and end marker) intact.

    Damaged headers can crash some codecs (the fuzz tests run those in a sandbox).
    """
    if data.startswith(b"\xff\x4f"):  # J2K codestream: the data starts after SOD
        start = data.index(b"\xff\x93") + 2
    else:  # JPEG, JPEG-LS: after the first scan header
        sos = data.index(b"\xff\xda")
        start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    for _ in range(4):
        out[int(rng.integers(start, len(out) - 2))] = int(rng.integers(0, 256))
    return bytes(out)


def _htj2k_cases() -> list[Case]:
    """An HTJ2K CT frame, and damaged copies that OpenJPH reports only to the unraisable hook."""
    ds = read(
        CORNERSTONE / "CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm"
    )
    params = params_from_dataset(ds, HTJ2K)
    dtype = "<i2" if params.pixel_representation else "<u2"
    ct = np.frombuffer(frame(ds, 0), dtype).reshape(params.rows, params.columns)
    good = bytes(imagecodecs.htj2k_encode(ct, reversible=True))
    cases = [_frame_case("htj2k", good, params)]
    only_openjph = default_registry()
    only_openjph.disable(*(c.name for c in only_openjph if c.name != "imagecodecs-htj2k"))
    for seed in range(200):
        damaged = _damaged(good, seed)
        try:
            decode_frame(damaged, params, registry=only_openjph)
        except DecodeError as exc:
            if "ojph error" in str(exc):
                cases.append(_frame_case(f"htj2k-damaged-{seed}", damaged, params))
        if len(cases) == 4:
            return cases
    raise AssertionError("no damaged HTJ2K frame that OpenJPH reports through the hook")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))


def _encode(image: PILImage.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _web_cases() -> list[Case]:
    rng = np.random.default_rng(5)
    rgb = PILImage.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    grey16 = PILImage.fromarray(rng.integers(0, 65536, (90, 70), dtype=np.uint16))
    exif = PILImage.Exif()
    exif[0x0112] = 6
    # EXIF whose second entry points past the end of the block: Pillow warns about
    # it (as it opens the JPEG), which the test suite's warning filters make an error.
    tiff = b"II*\x00" + struct.pack("<LH", 8, 2)
    tiff += struct.pack("<HHLHH", 0x0112, 3, 1, 8, 0) + struct.pack("<HHLL", 0x010F, 2, 64, 4000)
    damaged_exif = b"Exif\x00\x00" + tiff + b"\x00\x00\x00\x00"
    png = _encode(rgb, "PNG")
    return [
        _web("web-png", png),
        _web("web-png-rgba", _encode(rgb.convert("RGBA"), "PNG"), rgba=True),
        _web("web-png-16", _encode(grey16, "PNG")),
        _web("web-jpeg-exif", _encode(rgb, "JPEG", quality=90, exif=exif.tobytes())),
        _web("web-jpeg-damaged-exif", _encode(rgb, "JPEG", quality=90, exif=damaged_exif)),
        _web("web-gif", _encode(rgb.convert("P"), "GIF")),
        _web("web-over-our-limit", png, max_pixels=10_000),
        _web("web-bomb-pillow-error", _png_header_only(30000, 30000)),
        _web("web-bomb-pillow-warning", _png_header_only(20000, 20000)),
        _web("web-truncated", png[: len(png) // 2]),
        _web("web-not-an-image", b"<html>please log in</html>"),
    ]


def _cases() -> list[Case]:
    rle = "CTImage.dcm_RLELosslessTransferSyntax_1.2.840.10008.1.2.5.dcm"
    j2k = "CTImage.dcm_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm"
    rle_ds = read(CORNERSTONE / rle)
    rle_frame = frame(rle_ds, 0)
    j2k_ds = read(CORNERSTONE / j2k)
    j2k_frame = frame(j2k_ds, 0)
    return [
        _dicom("jpeg-ls", "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm"),
        _dicom("jpeg-ls-near", "CTImage.dcm_JPEGLSLossyTransferSyntax_1.2.840.10008.1.2.4.81.dcm"),
        _dicom("jpeg-ls-rgb", "TestPattern_JPEG-LS-Lossless.dcm"),
        _dicom("j2k", j2k),
        _dicom("j2k-lossy", "CTImage.dcm_JPEG2000TransferSyntax_1.2.840.10008.1.2.4.91.dcm"),
        _dicom("rle", rle),
        _dicom("rle-rgb", "no-pixel-spacing.dcm"),
        _dicom(
            "jpeg-baseline", "CTImage.dcm_JPEGProcess1TransferSyntax_1.2.840.10008.1.2.4.50.dcm"
        ),
        _dicom("jpeg-ybr422", "TestPattern_JPEG-Baseline_YBR422.dcm", rgba=True),
        _dicom(
            "jpeg-lossless", "CTImage.dcm_JPEGProcess14SV1TransferSyntax_1.2.840.10008.1.2.4.70.dcm"
        ),
        _frame_case("j2k-over-the-limit", j2k_frame, params_from_dataset(j2k_ds), 1000),
        _frame_case("j2k-truncated", j2k_frame[: len(j2k_frame) // 2], params_from_dataset(j2k_ds)),
        _frame_case("rle-truncated", rle_frame[: len(rle_frame) // 3], params_from_dataset(rle_ds)),
        *_htj2k_cases(),
        *_web_cases(),
    ]


# -- outcomes ----------------------------------------------------------------------------

Result = DecodedFrame | WebPixels | ImageLoaderError


def _run(case: Case) -> Result:
    """The case's result, or its typed error (anything else propagates)."""
    try:
        result: Result = case.fn(*case.args)
    except ImageLoaderError as exc:
        return exc
    return result


def _fields(result: Result) -> tuple[Any, ...]:
    if isinstance(result, ImageLoaderError):
        # Pillow names the BytesIO it could not identify, at its address.
        return (type(result), re.sub(" at 0x[0-9a-f]+", "", str(result)))
    if isinstance(result, DecodedFrame):
        extra: tuple[Any, ...] = (result.codec, result.photometric_interpretation, result.prescale)
    else:
        extra = (result.format, result.mode)
    pixels = result.pixels
    return (pixels.dtype, pixels.shape, result.min_value, result.max_value, result.color, extra)


def _same(result: Result | BaseException, expected: Result) -> bool:
    if not isinstance(result, DecodedFrame | WebPixels | ImageLoaderError):
        return False  # a foreign exception
    if _fields(result) != _fields(expected):
        return False
    if isinstance(result, ImageLoaderError):
        return True
    assert not isinstance(expected, ImageLoaderError)
    return bool(np.array_equal(result.pixels, expected.pixels))


def _process_state() -> tuple[Any, ...]:
    return (
        sys.unraisablehook,
        warnings.filters,
        list(warnings.filters),
        warnings.showwarning,
        PILImage.MAX_IMAGE_PIXELS,
    )


def _assert_same_state(before: tuple[Any, ...]) -> None:
    after = _process_state()
    assert after[0] is before[0], "sys.unraisablehook changed"
    assert after[1] is before[1] and after[2] == before[2], "warnings.filters changed"
    assert after[3] is before[3], "warnings.showwarning changed"
    assert after[4] == before[4], "PIL.Image.MAX_IMAGE_PIXELS changed"


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return _cases()


@pytest.fixture(scope="module")
def reference(cases: list[Case]) -> dict[str, Result]:
    """Each case decoded alone on this thread (which also sets Pillow and the hook up, once)."""
    return {case.name: _run(case) for case in cases}


def _schedule(cases: list[Case]) -> list[Case]:
    jobs = [cases[i % len(cases)] for i in range(DECODES)]
    random.Random(17).shuffle(jobs)
    return jobs


def test_the_cases_hold_results_and_every_kind_of_typed_error(
    reference: dict[str, Result],
) -> None:
    def kind(name: str) -> Any:
        result = reference[name]
        return type(result) if isinstance(result, ImageLoaderError) else "ok"

    for name in ("jpeg-ls", "j2k", "rle", "jpeg-baseline", "htj2k", "web-png", "web-gif"):
        assert kind(name) == "ok", reference[name]
    for name in ("j2k-over-the-limit", "web-over-our-limit", "web-bomb-pillow-error"):
        assert kind(name) is ImageTooLargeError, reference[name]
    assert kind("web-bomb-pillow-warning") is ImageTooLargeError  # Pillow's warning, an error here
    for name in ("j2k-truncated", "rle-truncated", "web-truncated", "web-not-an-image"):
        assert kind(name) is DecodeError, reference[name]
    # Pillow's warning, raised as the test suite's warning filters say (on every thread).
    assert kind("web-jpeg-damaged-exif") is DecodeError
    assert "UserWarning: Tag data larger than file" in str(reference["web-jpeg-damaged-exif"])
    damaged = [name for name in reference if name.startswith("htj2k-damaged")]
    assert len(damaged) == 3
    for name in damaged:
        # OpenJPH's error, seen through the hook; OpenJPEG then refuses the frame too.
        assert kind(name) is DecodeError and "htj2k_decode: ojph error" in str(reference[name])
    # EXIF orientation 6: rotated.
    assert isinstance(rotated := reference["web-jpeg-exif"], WebPixels)
    assert rotated.pixels.shape == (160, 120, 3)


def test_decodes_on_many_threads_equal_the_single_threaded_ones(
    cases: list[Case], reference: dict[str, Result]
) -> None:
    before = _process_state()
    lock = threading.Lock()
    running = peak = 0
    threads: set[str] = set()

    def job(case: Case) -> str | None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            threads.add(threading.current_thread().name)
        try:
            result = _run(case)
        finally:
            with lock:
                running -= 1
        return None if _same(result, reference[case.name]) else case.name

    with concurrent.futures.ThreadPoolExecutor(THREADS) as executor:
        futures = [executor.submit(job, case) for case in _schedule(cases)]
        _, pending = concurrent.futures.wait(futures, timeout=150)
        assert not pending, "decodes on threads did not finish in time"
    mismatched = [name for f in futures if (name := f.result()) is not None]
    assert not mismatched, f"differ from the single-threaded decode: {sorted(set(mismatched))}"
    assert len(threads) == THREADS and peak > 1
    _assert_same_state(before)


def _on_thread(threads: set[str], fn: Callable[..., Any], *args: Any) -> Any:
    threads.add(threading.current_thread().name)
    return fn(*args)


async def test_a_pool_in_a_daemonic_process_decodes_on_its_threads(
    cases: list[Case], reference: dict[str, Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        # A Dask worker is a daemonic process: it cannot start decode processes, so the
        # pool decodes on as many threads of the process instead.
        patch.setattr(multiprocessing.current_process(), "daemon", True)
        pool = DecodePool(max_workers=THREADS)
    assert pool.in_process
    before = _process_state()
    threads: set[str] = set()

    async def one(case: Case) -> str | None:
        try:
            result = await pool.run(_on_thread, threads, case.fn, *case.args)
        except ImageLoaderError as exc:
            result = exc
        return None if _same(result, reference[case.name]) else case.name

    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(one(case) for case in _schedule(cases))), timeout=150
        )
    finally:
        await pool.aclose()
    mismatched = sorted({name for name in outcomes if name is not None})
    assert not mismatched, f"differ from the single-threaded decode: {mismatched}"
    assert len(threads) > 1
    _assert_same_state(before)


# -- the one process-wide hook ------------------------------------------------------------


def test_the_hook_is_installed_once_and_passes_on_what_no_decode_raised(
    reference: dict[str, Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = codecs._OPENJPH_ERRORS
    assert sys.unraisablehook is hook  # installed by the first HTJ2K decode, and kept
    seen: list[Any] = []
    monkeypatch.setattr(hook, "previous", seen.append)
    elsewhere = object()
    hook(elsewhere)  # type: ignore[arg-type]
    assert seen == [elsewhere]
    with hook.collect() as caught:
        hook(elsewhere)  # type: ignore[arg-type]
        other = threading.Thread(target=hook, args=(elsewhere,))
        other.start()
        other.join()
    assert caught == [elsewhere]  # raised on this thread, inside the block
    assert seen == [elsewhere, elsewhere]  # the other thread's goes on
    assert sys.unraisablehook is hook


def test_a_replaced_hook_hands_htj2k_frames_to_openjpeg(
    cases: list[Case], reference: dict[str, Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Someone replaced the hook after ours was installed: OpenJPH's errors would go
    # unseen, so OpenJPEG decodes HTJ2K instead (it raises its errors).
    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    by_name = {case.name: case for case in cases}
    good = _run(by_name["htj2k"])
    expected = reference["htj2k"]
    assert isinstance(good, DecodedFrame) and isinstance(expected, DecodedFrame)
    assert good.codec == "imagecodecs-jpeg2k" and expected.codec == "imagecodecs-htj2k"
    assert np.array_equal(good.pixels, expected.pixels)
    damaged = _run(next(c for name, c in by_name.items() if name.startswith("htj2k-damaged")))
    assert isinstance(damaged, DecodeError)
    assert "sys.unraisablehook was replaced" in str(damaged)
    assert seen == []


def test_of_the_imagecodecs_decoders_only_openjph_reports_errors_to_the_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Why only ``htj2k_decode`` is decoded under the hook: the others raise."""
    ds = read(
        CORNERSTONE / "CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm"
    )
    ct = np.frombuffer(frame(ds, 0), "<i2").reshape(512, 512)[128:256, 128:256].view(np.uint16)
    lossless = frame(
        read(CORNERSTONE / "CTImage.dcm_JPEGProcess14SV1TransferSyntax_1.2.840.10008.1.2.4.70.dcm"),
        0,
    )
    streams = {
        "htj2k_decode": bytes(imagecodecs.htj2k_encode(ct, reversible=True)),
        "jpeg2k_decode": bytes(imagecodecs.jpeg2k_encode(ct, reversible=True)),
        "jpegls_decode": bytes(imagecodecs.jpegls_encode(ct)),
        "ljpeg_decode": lossless,
        "jpegsof3_decode": lossless,
    }
    reported: dict[str, int] = {}
    for function, data in streams.items():
        seen: list[Any] = []
        monkeypatch.setattr(sys, "unraisablehook", seen.append)
        for seed in range(40):
            with contextlib.suppress(Exception):
                getattr(imagecodecs, function)(_damaged(data, seed))
        reported[function] = len(seen)
    assert reported.pop("htj2k_decode") > 0
    assert reported == dict.fromkeys(reported, 0)


def test_pillows_limit_is_set_once_before_the_first_decode(reference: dict[str, Result]) -> None:
    assert PILImage.MAX_IMAGE_PIXELS is None or PILImage.MAX_IMAGE_PIXELS >= WEB_LIMIT
    assert codecs.PILLOW_MAX_IMAGE_PIXELS == WEB_LIMIT
