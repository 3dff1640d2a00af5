"""Measurement 12: decode levels and progressive loading (issue 15), each side by side.

- **levels**: ``imageloader.decode.worker.decode_frame`` in this process, one thread,
  at ``DecodeOptions(decode_level=n)`` for n in 0..3 on the corpus CT (512² 16-bit)
  in JPEG 2000 lossless, HTJ2K lossless (encoded here by OpenJPH through
  imagecodecs, as ``bench_codecs.py`` does), JPEG baseline, JPEG-LS and explicit VR
  little endian: ms per frame (each round gives every case the same time budget in
  turn; median over the rounds), the ratio full / level and the codec that ran.
  Goal: at least 5× faster at level 2 than in full on JPEG 2000.
- **stages**: time to first image of one 512² HTJ2K frame of the benchmark's CT over
  a local aiohttp server (its own thread and event loop) that sends the frames body
  at about 2 MB/s (4 KiB, then 2 ms asleep). ``loader.iter_image_stages(image_id,
  levels=(2,))`` (the first image at 128², the last the full frame) against
  ``loader.load_image(image_id)`` (the full frame only); a fresh
  ``ImageLoader(max_web_workers=1)`` per side and round, its workers warmed and the
  instance's metadata loaded before the clock starts, rounds interleaved with the
  order alternating.
- **thumbnails**: ``GET /images/{id}?size=128`` of an app ``FastAPI(lifespan=
  imageloader_lifespan(access=..., max_web_workers=2))`` with ``image_router()``
  (decoded at the covering decode level, then fitted) against ``image_router(
  decode_levels=False)`` (decoded in full, then fitted: the route before decode
  levels), each served by uvicorn in its own process (``python -m
  benchmarks.progressive serve ...``) started for the round, so every load is cold;
  distinct frames of the JPEG 2000 series from the private Orthanc (warmed by an
  untimed pass), 8 requests at a time from aiohttp; images/s, median of interleaved
  rounds, CPU seconds of the app and its workers from ``/proc``.
"""

from __future__ import annotations

import asyncio
import statistics
import struct
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from imageloader import ImageLoader
from imageloader.decode.params import DecodeOptions
from imageloader.decode.worker import decode_frame

from .bench_codecs import CORPUS, Case, _case, _htj2k_cases, ms_per_call
from .environment import BenchEnv
from .fastapi_path import _children, _cpu, _free_port, _started, app_process

__all__ = ["run_progressive"]

Log = Callable[[str], None]
ROOT = Path(__file__).resolve().parents[1]
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
CT = "CTImage.dcm_{}TransferSyntax_{}.dcm"
LEVELS = (0, 1, 2, 3)
GOAL_LEVEL, GOAL_RATIO = 2, 5.0

#: (label, corpus file, or None for the HTJ2K encoding made here)
SYNTAX_CASES: tuple[tuple[str, str | None], ...] = (
    ("JPEG 2000 lossless", CT.format("JPEG2000LosslessOnly", "1.2.840.10008.1.2.4.90")),
    ("HTJ2K lossless", None),
    ("JPEG baseline 8-bit", CT.format("JPEGProcess1", "1.2.840.10008.1.2.4.50")),
    ("JPEG-LS lossless", CT.format("JPEGLSLossless", "1.2.840.10008.1.2.4.80")),
    ("explicit VR LE", "CTImage.dcm"),
)

#: The throttled link: CHUNK bytes, then PAUSE seconds asleep (about 2 MB/s).
CHUNK, PAUSE = 4096, 0.002
STAGE_LEVELS = (2,)
BOUNDARY = "imageloader-bench-boundary"

THUMB_SERIES = "j2k"
THUMB_SIZE = 128
THUMB_CONCURRENCY = 8
APP_WORKERS = 2


@dataclass(frozen=True)
class Profile:
    level_rounds: int
    level_budget_s: float
    stage_rounds: int
    thumb_images: int
    thumb_rounds: int


PROFILES = {
    "quick": Profile(5, 0.1, 5, 20, 3),
    "full": Profile(9, 0.2, 15, 100, 5),
}


def _med(values: list[float]) -> float:
    return statistics.median(values)


# -- 1. decode levels, in this process -------------------------------------------------


def _level_cases() -> list[tuple[str, Case]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = [
            c
            for c in _htj2k_cases(CORPUS / "CTImage.dcm", CORPUS / "TestPattern_RGB.dcm")
            if c.label == "CT" and c.params.transfer_syntax_uid == HTJ2K_LOSSLESS
        ]
        return [
            (label, _case(CORPUS / file, "CT") if file else made[0]) for label, file in SYNTAX_CASES
        ]


def _levels(profile: Profile, log: Log) -> dict[str, Any]:
    cases = _level_cases()
    runs: dict[tuple[str, int], Callable[[], Any]] = {}
    info: dict[tuple[str, int], Any] = {}
    for label, case in cases:
        for level in LEVELS:
            options = DecodeOptions(decode_level=level)

            def run(c: Case = case, o: DecodeOptions = options) -> Any:
                return decode_frame(c.data, c.params, o)

            frame = run()  # warm-up: imports, codec initialisation
            run()
            runs[label, level] = run
            info[label, level] = frame
    samples: dict[tuple[str, int], list[float]] = {key: [] for key in runs}
    for round_ in range(profile.level_rounds):
        for key, run in runs.items():
            samples[key].append(ms_per_call(run, profile.level_budget_s))
        log(f"  progressive levels round {round_ + 1}/{profile.level_rounds} done")
    rows = []
    for label, case in cases:
        full = _med(samples[label, 0])
        levels = {}
        for level in LEVELS:
            frame = info[label, level]
            ms = _med(samples[label, level])
            levels[str(level)] = {
                "ms": ms,
                "samples": samples[label, level],
                "ratio": full / ms,
                "codec": frame.codec,
                "shape": list(frame.pixels.shape),
                "decode_level": frame.decode_level,
            }
        rows.append(
            {
                "syntax": label,
                "transfer_syntax_uid": case.params.transfer_syntax_uid,
                "kib": len(case.data) / 1024,
                "levels": levels,
            }
        )
        log(
            f"  {label}: "
            + ", ".join(
                f"L{n} {v['ms']:.2f} ms ({v['ratio']:.1f}×, {v['codec']})"
                for n, v in levels.items()
            )
        )
    [j2k] = [r for r in rows if r["syntax"] == "JPEG 2000 lossless"]
    goal_ratio = j2k["levels"][str(GOAL_LEVEL)]["ratio"]
    return {
        "rounds": profile.level_rounds,
        "budget_s": profile.level_budget_s,
        "image": "corpus CTImage.dcm, 512×512, 16 bit",
        "cases": rows,
        "goal": {
            "syntax": j2k["syntax"],
            "level": GOAL_LEVEL,
            "ratio": goal_ratio,
            "target": GOAL_RATIO,
            "met": goal_ratio >= GOAL_RATIO,
        },
    }


async def _levels_async(profile: Profile, log: Log) -> dict[str, Any]:
    return _levels(profile, log)  # on this (the only busy) thread: nothing else runs


# -- 2. time to first image over a throttled link ----------------------------------------


@dataclass
class _Throttled:
    """A DICOMweb instance (metadata, frame 1) on loopback, its frames body throttled."""

    base: str
    image_id: str
    body_bytes: int
    codestream_bytes: int
    send_s: list[float] = field(default_factory=list)


def _throttled_app(path: Path, state: dict[str, Any]) -> Any:
    import pydicom
    from aiohttp import web
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(path)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    [frame] = list(generate_frames(ds.PixelData, number_of_frames=1))
    meta = ds.to_json_dict(bulk_data_threshold=1 << 30)
    meta.pop("7FE00010", None)
    body = b"".join(
        (
            f"--{BOUNDARY}\r\nContent-Type: application/octet-stream; "
            f"transfer-syntax={syntax}\r\n\r\n".encode(),
            frame,
            f"\r\n--{BOUNDARY}--\r\n".encode(),
        )
    )
    ctype = f'multipart/related; type="application/octet-stream"; boundary={BOUNDARY}'
    prefix = (
        f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    state.update(prefix=prefix, body_bytes=len(body), codestream_bytes=len(frame), send_s=[])

    async def metadata(request: web.Request) -> web.Response:
        return web.json_response([meta], content_type="application/dicom+json")

    async def frames(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": ctype, "Content-Length": str(len(body))})
        await resp.prepare(request)
        start = time.perf_counter()
        for at in range(0, len(body), CHUNK):
            await resp.write(body[at : at + CHUNK])
            await asyncio.sleep(PAUSE)
        await resp.write_eof()
        state["send_s"].append(time.perf_counter() - start)
        return resp

    app = web.Application()
    app.router.add_get(f"{prefix}/metadata", metadata)
    app.router.add_get(f"{prefix}/frames/1", frames)
    return app


@contextmanager
def _throttled_server(path: Path) -> Iterator[_Throttled]:
    """The server on its own thread and event loop (the client's loop does not pace it)."""
    from aiohttp import web

    state: dict[str, Any] = {}
    app = _throttled_app(path, state)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failed: list[BaseException] = []
    runner = web.AppRunner(app)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
        except BaseException as exc:
            failed.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    thread = threading.Thread(target=serve, name="throttled-dicomweb", daemon=True)
    thread.start()
    ready.wait(30)
    if failed:
        raise failed[0]
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}/dicom-web"
    served = _Throttled(
        base,
        f"wadors:http://{host}:{port}{state['prefix']}/frames/1",
        state["body_bytes"],
        state["codestream_bytes"],
        state["send_s"],
    )
    try:
        yield served
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


@asynccontextmanager
async def _fresh_loader(image_id: str) -> AsyncIterator[ImageLoader]:
    async with ImageLoader(max_web_workers=1) as loader:
        await loader.decode_pool.warm()
        await loader.load_metadata([image_id])  # untimed: only the frame transfer is timed
        yield loader


async def _stages_round(image_id: str, reference: np.ndarray) -> dict[str, Any]:
    from imageloader import events as ev

    received: list[int] = []
    first: np.ndarray | None = None
    async with _fresh_loader(image_id) as loader:
        loader.events.on(ev.IMAGE_LOAD_STAGE, lambda e: received.append(e.detail["bytes_received"]))
        times: list[float] = []
        shapes: list[list[int]] = []
        levels: list[int] = []
        start = time.perf_counter()
        async for image in loader.iter_image_stages(image_id, levels=STAGE_LEVELS):
            times.append(time.perf_counter() - start)
            shapes.append([image.rows, image.columns])
            levels.append(image.decode_level)
            if first is None:
                first = np.asarray(image.pixel_data)
    assert first is not None
    same = first.shape == reference.shape
    diff = np.abs(first.astype(np.float64) - reference) if same else None
    return {
        "first_s": times[0],
        "last_s": times[-1],
        "images": len(times),
        "shapes": shapes,
        "levels": levels,
        "first_bytes_received": received[0] if received else None,
        # The first image against the same level decoded from the complete codestream.
        "first_differing_pixels": None if diff is None else int((diff > 0).sum()),
        "first_max_abs_diff": None if diff is None else float(diff.max()),
    }


async def _full_round(image_id: str) -> dict[str, Any]:
    async with _fresh_loader(image_id) as loader:
        start = time.perf_counter()
        image = await loader.load_image(image_id)
        seconds = time.perf_counter() - start
    return {"s": seconds, "shape": [image.rows, image.columns]}


def _level_reference(path: Path, level: int) -> tuple[np.ndarray, int | None]:
    """The frame at ``level`` decoded from its complete codestream (what a stage should
    be), and the shortest prefix of the codestream, in steps of ``CHUNK`` bytes, from
    which ``decode_partial`` gives exactly that (None: only the whole)."""
    from imageloader.decode.worker import decode_partial
    from imageloader.errors import ImageLoaderError

    case = _case(path, "reference")
    frame = decode_frame(case.data, case.params, DecodeOptions(decode_level=level))
    exact = None
    for size in range(CHUNK, len(case.data), CHUNK):
        try:
            partial = decode_partial(case.data[:size], case.params, level)
        except ImageLoaderError:
            continue
        if np.array_equal(partial.pixels, frame.pixels):
            exact = size
            break
    return np.asarray(frame.pixels, dtype=np.float64), exact


def _corpus_htj2k(folder: Path) -> Path:
    """The corpus CT (signed 16-bit) as an HTJ2K lossless file (OpenJPH, RPCL).

    Not the phantom series: its stored values are unsigned, and OpenJPH's reduced
    resolutions of unsigned data may wrap, so the loader decodes those frames in
    full and they get no early stage (``imageloader.decode.reduce.may_have_wrapped``).
    """
    import imagecodecs
    import pydicom
    from pydicom.encaps import encapsulate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(CORPUS / "CTImage.dcm")
        stream = bytes(imagecodecs.htj2k_encode(ds.pixel_array, reversible=True))
        ds.PixelData = encapsulate([stream])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = HTJ2K_LOSSLESS
        path = folder / "ct-htj2k.dcm"
        ds.save_as(path, enforce_file_format=True)
    return path


async def _stages(env: BenchEnv, profile: Profile, log: Log) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        return await _stages_of(_corpus_htj2k(Path(folder)), profile, log)


async def _stages_of(path: Path, profile: Profile, log: Log) -> dict[str, Any]:
    reference, exact_bytes = _level_reference(path, STAGE_LEVELS[0])
    with _throttled_server(path) as server:
        await _full_round(server.image_id)  # untimed: imports, the first connection
        stage_runs: list[dict[str, Any]] = []
        full_runs: list[dict[str, Any]] = []
        for round_ in range(profile.stage_rounds):
            for side in ("stages", "full") if round_ % 2 == 0 else ("full", "stages"):
                if side == "stages":
                    stage_runs.append(await _stages_round(server.image_id, reference))
                else:
                    full_runs.append(await _full_round(server.image_id))
            s, f = stage_runs[-1], full_runs[-1]
            log(
                f"  progressive stages round {round_ + 1}/{profile.stage_rounds}: first "
                f"{s['first_s'] * 1000:.0f} ms, last {s['last_s'] * 1000:.0f} ms; "
                f"load_image {f['s'] * 1000:.0f} ms"
            )
        send = list(server.send_s[1:])  # the untimed load's first
        body, codestream = server.body_bytes, server.codestream_bytes
    first = _med([r["first_s"] for r in stage_runs])
    last = _med([r["last_s"] for r in stage_runs])
    full = _med([r["s"] for r in full_runs])
    received = [r["first_bytes_received"] for r in stage_runs if r["first_bytes_received"]]
    result = {
        "rounds": profile.stage_rounds,
        "file": f"corpus CTImage.dcm as HTJ2K lossless ({path.name})",
        "body_bytes": body,
        "codestream_bytes": codestream,
        "chunk_bytes": CHUNK,
        "pause_ms": PAUSE * 1000,
        "send_s": _med(send),
        "link_mb_per_s": body / _med(send) / 1e6,
        "levels": list(STAGE_LEVELS),
        "stages": {
            "first_s": first,
            "last_s": last,
            "first_samples": [r["first_s"] for r in stage_runs],
            "last_samples": [r["last_s"] for r in stage_runs],
            "images": stage_runs[0]["images"],
            "shapes": stage_runs[0]["shapes"],
            "decode_levels": stage_runs[0]["levels"],
            "first_bytes_received": _med(received) if received else None,
        },
        "first_vs_complete_level": {
            "differing_pixels": _med([r["first_differing_pixels"] for r in stage_runs]),
            "max_abs_diff": max(r["first_max_abs_diff"] for r in stage_runs),
            "pixels": int(reference.size),
            "exact_from_codestream_bytes": exact_bytes,
        }
        if all(r["first_differing_pixels"] is not None for r in stage_runs)
        else None,
        "full": {
            "s": full,
            "samples": [r["s"] for r in full_runs],
            "shape": full_runs[0]["shape"],
        },
        "full_vs_first": full / first,
        "full_vs_last": full / last,
    }
    log(
        f"  progressive stages: first image {first * 1000:.0f} ms, last {last * 1000:.0f} ms, "
        f"load_image {full * 1000:.0f} ms: {result['full_vs_first']:.1f}× sooner "
        f"(link {result['link_mb_per_s']:.2f} MB/s)"
    )
    return result


# -- 3. the FastAPI thumbnail route ------------------------------------------------------


def serve(port: int, host: str, decode_levels: bool) -> None:
    """The app measured (``python -m benchmarks.progressive serve PORT HOST 0|1``)."""
    import uvicorn
    from fastapi import FastAPI

    from imageloader import AccessPolicy
    from imageloader.integrations.fastapi import (
        add_error_handlers,
        image_router,
        imageloader_lifespan,
    )

    app = FastAPI(
        lifespan=imageloader_lifespan(
            access=AccessPolicy(schemes={"wadors"}, hosts={host}), max_web_workers=APP_WORKERS
        )
    )
    app.include_router(image_router(decode_levels=decode_levels))
    add_error_handlers(app)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


@contextmanager
def _thumbnail_app(env: BenchEnv, decode_levels: bool) -> Iterator[tuple[str, int]]:

    port = _free_port()
    host = urlsplit(env.dicomweb).netloc
    command = [
        sys.executable,
        "-m",
        "benchmarks.progressive",
        "serve",
        str(port),
        host,
        "1" if decode_levels else "0",
    ]
    with app_process(command, port, cwd=ROOT) as served:
        yield served


def _png_size(body: bytes) -> list[int]:
    if not body.startswith(b"\x89PNG\r\n\x1a\n"):
        raise AssertionError(f"not a PNG: {body[:100]!r}")
    width, height = struct.unpack(">II", body[16:24])
    return [height, width]


async def _thumb_round(
    env: BenchEnv, ids: list[str], warmup: str, decode_levels: bool
) -> dict[str, Any]:
    import aiohttp

    def url(image_id: str) -> str:
        return f"/images/{quote(image_id, safe='')}?size={THUMB_SIZE}"

    with _thumbnail_app(env, decode_levels) as (base, pid):
        startup = await _started(base)
        connector = aiohttp.TCPConnector(limit=THUMB_CONCURRENCY)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:

            async def get(image_id: str) -> bytes:
                async with session.get(url(image_id)) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{image_id}: HTTP {response.status} {body[:300]!r}")
                    return body

            await get(warmup)  # untimed: workers' imports, the connection to Orthanc
            await asyncio.sleep(1.0)  # the lifespan's warm-up finishes in the background
            workers = _children(pid)
            gate = asyncio.Semaphore(THUMB_CONCURRENCY)

            async def bounded(image_id: str) -> bytes:
                async with gate:
                    return await get(image_id)

            before = (_cpu(pid), sum(map(_cpu, workers)))
            start = time.perf_counter()
            bodies = await asyncio.gather(*(bounded(i) for i in ids))
            seconds = time.perf_counter() - start
            after = (_cpu(pid), sum(map(_cpu, workers)))
    shapes = {tuple(_png_size(b)) for b in bodies}
    return {
        "s": seconds,
        "images_per_s": len(ids) / seconds,
        "startup_s": startup,
        "cpu_s": {"app": after[0] - before[0], "workers": after[1] - before[1]},
        "png_shapes": sorted(list(s) for s in shapes),
        "png_kib": _med([len(b) / 1024 for b in bodies]),
    }


async def _thumbnails(env: BenchEnv, profile: Profile, log: Log) -> dict[str, Any]:
    series = env.series[THUMB_SERIES]
    urls = series.frame_urls(env.dicomweb)
    count = min(profile.thumb_images, len(urls) - 1)
    ids = [f"wadors:{u}" for u in urls[:count]]
    warmup = f"wadors:{urls[count]}"
    # Orthanc reads and parses each file on first request: warm it for both sides alike.
    async with ImageLoader(max_web_workers=APP_WORKERS) as loader:
        await loader.load_and_cache_images([*ids, warmup])
    sides = {"levels": True, "full_then_fit": False}
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for round_ in range(profile.thumb_rounds):
        order = list(sides) if round_ % 2 == 0 else list(sides)[::-1]
        for side in order:
            runs[side].append(await _thumb_round(env, ids, warmup, sides[side]))
        log(
            f"  progressive thumbnails round {round_ + 1}/{profile.thumb_rounds}: "
            + ", ".join(f"{side} {runs[side][-1]['images_per_s']:.1f}/s" for side in sides)
        )

    def summary(side: str) -> dict[str, Any]:
        r = runs[side]
        return {
            "images_per_s": _med([x["images_per_s"] for x in r]),
            "s": _med([x["s"] for x in r]),
            "samples": [x["images_per_s"] for x in r],
            "startup_s": _med([x["startup_s"] for x in r]),
            "cpu_ms_per_image": {
                k: _med([x["cpu_s"][k] for x in r]) / len(ids) * 1000 for k in r[0]["cpu_s"]
            },
            "png_shapes": r[0]["png_shapes"],
            "png_kib": _med([x["png_kib"] for x in r]),
        }

    out = {side: summary(side) for side in sides}
    result = {
        "series": THUMB_SERIES,
        "transfer_syntax_uid": series.transfer_syntax_uid,
        "images": count,
        "size": THUMB_SIZE,
        "concurrency": THUMB_CONCURRENCY,
        "workers": APP_WORKERS,
        "rounds": profile.thumb_rounds,
        "sides": out,
        "ratio": out["levels"]["images_per_s"] / out["full_then_fit"]["images_per_s"],
    }
    log(
        f"  progressive thumbnails: levels {out['levels']['images_per_s']:.1f}/s, full then "
        f"fit {out['full_then_fit']['images_per_s']:.1f}/s: {result['ratio']:.2f}×"
    )
    return result


async def run_progressive(env: BenchEnv, log: Log) -> dict[str, Any]:
    """Decode levels per syntax, time to first stage image, the thumbnail route."""
    profile = PROFILES["quick" if env.profile.name == "quick" else "full"]
    out: dict[str, Any] = {}
    for name, part in (
        ("levels", lambda: _levels_async(profile, log)),
        ("stages", lambda: _stages(env, profile, log)),
        ("thumbnails", lambda: _thumbnails(env, profile, log)),
    ):
        log(f"  progressive: {name} ...")
        try:
            out[name] = await part()
        except Exception as exc:  # one broken part must not lose the others
            import traceback

            traceback.print_exc()
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1")
    else:
        sys.exit("usage: python -m benchmarks.progressive serve PORT HOST 0|1")
