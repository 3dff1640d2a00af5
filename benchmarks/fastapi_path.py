"""Measurement 10: the FastAPI image path, over real HTTP, against the bare loader.

The example app (``examples/fastapi_app.py``, uvicorn, 2 decode workers, its own
process as a user runs it) against the benchmark's private Orthanc, driven from
this process by an ``httpx.AsyncClient`` and, to show what the client itself
costs, by an ``aiohttp.ClientSession``:

- **cold**: ``IMAGES`` (40) distinct JPEG-LS frames (``wadors:`` imageIds), all
  requested at once (``GET /images/{id}``: full-size PNG, default window) from an
  app started for the round, against a fresh ``ImageLoader(max_web_workers=2)``
  loading the same imageIds with ``load_and_cache_images``. Both sides warmed first
  (workers started, one untimed load of another image, so connections are open),
  Orthanc warmed by an untimed pass over the same frames; ``COLD_ROUNDS`` rounds
  interleaved, the order rotating; CPU seconds of every process taken from
  ``/proc``. Goal: app ≤ 1.2 × the bare loader.
- **cached**: one image already rendered, ``CONCURRENCY`` (50) concurrent requests
  at a time, ``CACHED_ROUNDS`` rounds (the first not counted): latency per request
  (p50, p95) and requests/s; the same one request at a time; and 50 concurrent
  revalidations (``If-None-Match`` → 304). Goal: p50 ≤ 5 ms at 50 concurrent.
- **encoders**: the PNG encoders on the same frames windowed to 8 bits, one thread,
  in this process: ours (``imageloader.render.encode_png``, filter Up) with
  libdeflate and zlib at level 1, what it was (filter None, zlib 6), and Pillow's at
  ``compress_level`` 1 and 6 (6 is Pillow's default), full size and fitted into
  256; ms per frame (median) and KiB. Also the windowing, by table and by
  arithmetic, the whole ``render_png``, and ``render_png`` on 1 and 2 threads.
"""

from __future__ import annotations

import asyncio
import io
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from imageloader import ImageLoader
from imageloader.image import Image
from imageloader.render import encode_png, png_encoder, render_png, to_display

from ._tables import _f, _insert_section, _ok, _r, _table
from .environment import BenchEnv

__all__ = ["fastapi_report", "fastapi_sections", "run_fastapi"]

Log = Callable[[str], None]
SERIES = "jpeg-ls"
WARMUP_SERIES = "jpeg-lossless"
IMAGES = 40
COLD_ROUNDS = 3
CONCURRENCY = 50
CACHED_ROUNDS = 21
SEQUENTIAL = 200
ENCODER_FRAMES = 20
WORKERS = 2
CLIENTS = ("httpx", "aiohttp")
APP = Path(__file__).resolve().parents[1] / "examples" / "fastapi_app.py"
_TICK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


@contextmanager
def _example_app(env: BenchEnv) -> Iterator[tuple[str, int]]:
    """``examples/fastapi_app.py`` on a free port, allowed to reach the private Orthanc."""
    port = _free_port()
    host = urlsplit(env.dicomweb).netloc
    environment = {**os.environ, "IMAGELOADER_SCHEMES": "wadors", "IMAGELOADER_HOSTS": host}
    command = [sys.executable, str(APP), "--port", str(port), "--workers", str(WORKERS)]
    with app_process(command, port, env=environment) as served:
        yield served


@contextmanager
def app_process(
    command: list[str], port: int, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[tuple[str, int]]:
    """Run an app's ``command`` serving on ``port``: its URL and pid. Stopped with
    SIGINT (killed after 30 s); a traceback in its output fails the measurement."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=log)
        try:
            yield f"http://127.0.0.1:{port}", process.pid
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.seek(0)
            output = log.read().decode(errors="replace")
            if "Traceback" in output:
                raise RuntimeError(f"the app failed:\n{output[-3000:]}")


class _Client:
    """``get(url, headers) -> (status, body, etag)`` over httpx or aiohttp."""

    def __init__(self, kind: str, get: Callable[..., Any]) -> None:
        self.kind = kind
        self._get = get

    async def get(
        self, url: str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, str | None]:
        status, body, etag = await self._get(url, headers)
        if status not in (200, 304):
            raise RuntimeError(f"{url}: HTTP {status} {body[:300]!r}")
        return status, body, etag


@asynccontextmanager
async def _client(kind: str, base: str) -> AsyncIterator[_Client]:
    connections = max(CONCURRENCY, IMAGES) + 8
    if kind == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(
            base_url=base, timeout=60, trust_env=False, limits=limits
        ) as client:

            async def get(url: str, headers: dict[str, str] | None) -> Any:
                response = await client.get(url, headers=headers)
                return response.status_code, response.content, response.headers.get("etag")

            yield _Client(kind, get)
    else:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=connections)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:

            async def get(url: str, headers: dict[str, str] | None) -> Any:
                async with session.get(url, headers=headers) as response:
                    return response.status, await response.read(), response.headers.get("etag")

            yield _Client(kind, get)


async def _started(base: str, deadline: float = 30) -> float:
    """Seconds until the app answers."""
    import httpx

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
        while True:
            try:
                if (await client.get("/openapi.json")).status_code == 200:
                    return time.perf_counter() - start
            except httpx.TransportError:
                pass
            if time.perf_counter() - start > deadline:
                raise RuntimeError("the example app did not start")
            await asyncio.sleep(0.05)


def _url(image_id: str) -> str:
    return f"/images/{quote(image_id, safe='')}"


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def _app_round(
    env: BenchEnv, ids: list[str], warmup: str, kind: str, *, cached: bool
) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {}
    with _example_app(env) as (base, pid):
        out["startup_s"] = await _started(base)
        async with _client(kind, base) as client:
            await client.get(_url(warmup))
            await asyncio.sleep(1.0)  # the lifespan's warm-up finishes in the background
            workers = _children(pid)
            before = (_cpu(pid), sum(map(_cpu, workers)), _own_cpu())
            start = time.perf_counter()
            responses = await asyncio.gather(*(client.get(_url(i)) for i in ids))
            out["cold_s"] = time.perf_counter() - start
            after = (_cpu(pid), sum(map(_cpu, workers)), _own_cpu())
            out["cpu_s"] = {
                "app": after[0] - before[0],
                "workers": after[1] - before[1],
                "client": after[2] - before[2],
            }
            if not all(body.startswith(b"\x89PNG") for _, body, _ in responses):
                raise AssertionError("not a PNG")
            out["png_kib"] = statistics.median(len(body) for _, body, _ in responses) / 1024
        if cached:
            out["cached"] = {}
            for each in CLIENTS:
                async with _client(each, base) as client:
                    out["cached"][each] = await _cached(client, _url(ids[0]))
            async with httpx.AsyncClient(base_url=base, trust_env=False) as plain:
                out["stats"] = (await plain.get("/stats")).json()
    return out


async def _cached(client: _Client, url: str) -> dict[str, Any]:
    _, body, etag = await client.get(url)
    assert etag is not None

    async def timed(headers: dict[str, str] | None = None) -> float:
        start = time.perf_counter()
        await client.get(url, headers)
        return time.perf_counter() - start

    latencies: list[float] = []
    not_modified: list[float] = []
    elapsed = 0.0
    for index in range(CACHED_ROUNDS):
        start = time.perf_counter()
        batch = await asyncio.gather(*(timed() for _ in range(CONCURRENCY)))
        if index:  # the first round opens the connections
            elapsed += time.perf_counter() - start
            latencies += batch
    for _ in range(5):
        not_modified += await asyncio.gather(
            *(timed({"If-None-Match": etag}) for _ in range(CONCURRENCY))
        )
    sequential = [await timed() for _ in range(SEQUENTIAL)]
    return {
        "concurrency": CONCURRENCY,
        "requests": len(latencies),
        "p50_ms": _ms(latencies, 0.5),
        "p95_ms": _ms(latencies, 0.95),
        "max_ms": _ms(latencies, 1.0),
        "requests_per_s": len(latencies) / elapsed,
        "sequential_p50_ms": _ms(sequential, 0.5),
        "sequential_p95_ms": _ms(sequential, 0.95),
        "not_modified_p50_ms": _ms(not_modified, 0.5),
        "png_bytes": len(body),
    }


async def _bare_round(ids: list[str], warmup: str) -> dict[str, Any]:
    async with ImageLoader(max_web_workers=WORKERS, max_cache_size_bytes=512 << 20) as loader:
        await loader.decode_pool.warm()
        await loader.load_and_cache_image(warmup)
        workers = loader.decode_pool.pids()
        before = (_own_cpu(), sum(map(_cpu, workers)))
        start = time.perf_counter()
        # As the app's route asks: INTERACTION (load_and_cache_images' default is PREFETCH).
        images = await loader.load_and_cache_images(ids, request_type="interaction")
        seconds = time.perf_counter() - start
        after = (_own_cpu(), sum(map(_cpu, workers)))
    if len(images) != len(ids):
        raise AssertionError("missing images")
    cpu = {"loader": after[0] - before[0], "workers": after[1] - before[1]}
    return {"cold_s": seconds, "cpu_s": cpu}


def _pillow_png(pixels: np.ndarray, level: int) -> bytes:
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def _before_png(pixels: np.ndarray) -> bytes:
    """What ``encode_png`` was: filter None, zlib level 6 (greyscale only)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    height, width = pixels.shape
    lines = np.hstack([np.zeros((height, 1), np.uint8), pixels]).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(lines, 6)),
            chunk(b"IEND", b""),
        )
    )


def _median_ms(fn: Callable[[], Any], repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _encoders(images: list[Image]) -> dict[str, Any]:
    from imageloader.render import _compressors, _window, fitted_shape, resize_nearest

    encoders: dict[str, Callable[[np.ndarray], bytes]] = {}
    if "libdeflate" in _compressors():
        encoders["ours, Up, libdeflate 1"] = lambda a: encode_png(a, compressor="libdeflate")
    encoders["ours, Up, zlib 1"] = lambda a: encode_png(a, compressor="zlib")
    encoders["ours before: None, zlib 6"] = _before_png
    encoders["Pillow, compress_level=1"] = lambda a: _pillow_png(a, 1)
    encoders["Pillow, compress_level=6 (its default)"] = lambda a: _pillow_png(a, 6)
    cases: list[dict[str, Any]] = []
    for fit in (None, 256):
        frames = []
        for image in images:
            pixels = to_display(image)
            if fit is not None:
                pixels = resize_nearest(pixels, *fitted_shape(*pixels.shape[:2], fit))
            frames.append(pixels)
        for name, encode in encoders.items():
            ms = [_median_ms(lambda p=p, e=encode: e(p)) for p in frames]
            kib = [len(encode(p)) / 1024 for p in frames]
            cases.append(
                {
                    "encoder": name,
                    "size": "full" if fit is None else f"fitted into {fit}",
                    "shape": list(frames[0].shape),
                    "ms": statistics.median(ms),
                    "kib": statistics.median(kib),
                }
            )

    def arithmetic(image: Image) -> Any:
        return _window(image.pixel_data, image, image.window_center, image.window_width)

    med = statistics.median
    threads: dict[str, float] = {}
    for count in (1, 2):
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(render_png, images))
            start = time.perf_counter()
            for _ in range(3):
                list(pool.map(render_png, images))
            threads[str(count)] = 3 * len(images) / (time.perf_counter() - start)
    return {
        "frames": len(images),
        "chosen": png_encoder(),
        "cases": cases,
        "window_table_ms": med(_median_ms(lambda i=i: to_display(i)) for i in images),
        "window_arithmetic_ms": med(_median_ms(lambda i=i: arithmetic(i)) for i in images),
        "render_png_ms": med(_median_ms(lambda i=i: render_png(i)) for i in images),
        "renders_per_s": threads,
        "thread_scaling": threads["2"] / threads["1"],
    }


async def run_fastapi(env: BenchEnv, log: Log) -> dict[str, Any]:
    """The example app against the bare loader: cold, cached, and the PNG encoders."""
    series = env.series[SERIES]
    count = min(IMAGES, len(series.sop_uids))
    ids = [f"wadors:{url}" for url in series.frame_urls(env.dicomweb)[:count]]
    warmup = f"wadors:{env.series[WARMUP_SERIES].frame_urls(env.dicomweb)[0]}"
    # Orthanc reads and parses each file on first request: warm it for both sides alike.
    async with ImageLoader(max_web_workers=WORKERS) as loader:
        images = await loader.load_and_cache_images(ids)
        await loader.load_and_cache_image(warmup)
    log(f"  fastapi: encoders on {min(ENCODER_FRAMES, len(images))} frames ...")
    encoders = await asyncio.to_thread(_encoders, images[:ENCODER_FRAMES])
    for case in encoders["cases"]:
        log(f"    {case['encoder']} {case['size']}: {case['ms']:.2f} ms, {case['kib']:.1f} KiB")
    rounds = max(COLD_ROUNDS, env.profile.rounds)
    sides = ["bare", *CLIENTS]
    samples: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    last: dict[str, Any] = {}
    for index in range(rounds):
        order = sides[index % len(sides) :] + sides[: index % len(sides)]
        for side in order:
            if side == "bare":
                samples[side].append(await _bare_round(ids, warmup))
            else:
                cached = index == rounds - 1 and side == "httpx"
                result = await _app_round(env, ids, warmup, side, cached=cached)
                samples[side].append(result)
                if cached:
                    last = result
        log(
            f"  fastapi round {index + 1}: "
            + ", ".join(f"{side} {samples[side][-1]['cold_s']:.2f} s" for side in sides)
        )
    med = statistics.median

    def summary(side: str) -> dict[str, Any]:
        runs = samples[side]
        out = {
            "s": med(r["cold_s"] for r in runs),
            "samples": [r["cold_s"] for r in runs],
            "cpu_s": {k: med(r["cpu_s"][k] for r in runs) for k in runs[0]["cpu_s"]},
        }
        if side != "bare":
            out["startup_s"] = med(r["startup_s"] for r in runs)
            out["png_kib"] = med(r["png_kib"] for r in runs)
        return out

    cold = {side: summary(side) for side in sides}
    for kind in CLIENTS:
        cold[kind]["ratio"] = cold[kind]["s"] / cold["bare"]["s"]
    result: dict[str, Any] = {
        "series": SERIES,
        "images": count,
        "workers": WORKERS,
        "rounds": rounds,
        "cold": cold,
        "cached": last["cached"],
        "app_stats": last["stats"],
        "encoders": encoders,
    }
    cached = last["cached"]["httpx"]
    log(
        f"  fastapi: cold app/bare {cold['httpx']['ratio']:.2f}× (httpx), "
        f"{cold['aiohttp']['ratio']:.2f}× (aiohttp); cached p50 {cached['p50_ms']:.1f} ms, "
        f"p95 {cached['p95_ms']:.1f} ms at {CONCURRENCY} concurrent (httpx), "
        f"{last['cached']['aiohttp']['p50_ms']:.1f} / {last['cached']['aiohttp']['p95_ms']:.1f}"
        " ms (aiohttp)"
    )
    return result


def fastapi_sections(res: dict[str, Any]) -> list[str]:
    """The report's section 10 (empty when the section did not run or failed)."""
    if not _ok(res, "fastapi"):
        return []
    f = res["fastapi"]
    cold, cached, enc = f["cold"], f["cached"], f["encoders"]
    bare = cold["bare"]
    goals = []
    for kind in CLIENTS:
        ratio = cold[kind]["ratio"]
        goals.append(
            [
                f"cold: app ≤ 1.2 × bare loader ({kind} client)",
                f"{cold[kind]['s']:.2f} s vs {bare['s']:.2f} s = {_r(ratio)}",
                "yes" if ratio <= 1.2 else "no",
            ]
        )
    for kind in CLIENTS:
        c = cached[kind]
        goals.append(
            [
                f"cached: p50 ≤ 5 ms at {c['concurrency']} concurrent ({kind} client)",
                f"p50 {c['p50_ms']:.1f} ms, p95 {c['p95_ms']:.1f} ms",
                "yes" if c["p50_ms"] <= 5 else "no",
            ]
        )
    cpu_rows = [
        [
            "bare loader",
            _f(bare["s"], 2),
            _f(bare["cpu_s"]["loader"], 2),
            _f(bare["cpu_s"]["workers"], 2),
            "",
        ]
    ]
    cpu_rows += [
        [
            f"app, {kind} client",
            _f(cold[kind]["s"], 2),
            _f(cold[kind]["cpu_s"]["app"], 2),
            _f(cold[kind]["cpu_s"]["workers"], 2),
            _f(cold[kind]["cpu_s"]["client"], 2),
        ]
        for kind in CLIENTS
    ]
    cached_rows = [
        [
            kind,
            _f(c["p50_ms"], 1),
            _f(c["p95_ms"], 1),
            _f(c["requests_per_s"], 0),
            _f(c["not_modified_p50_ms"], 1),
            _f(c["sequential_p50_ms"], 2),
        ]
        for kind, c in cached.items()
    ]
    encoder_rows = [
        [c["encoder"], c["size"], "×".join(map(str, c["shape"])), _f(c["ms"], 2), _f(c["kib"], 1)]
        for c in enc["cases"]
    ]
    concurrency = cached["httpx"]["concurrency"]
    return [
        "## 10. The FastAPI image path (`examples/fastapi_app.py` over HTTP)",
        "",
        f"The example app (uvicorn, {f['workers']} decode workers, its own process) against "
        f"the private Orthanc, driven from this process by httpx and by aiohttp. Cold: "
        f"{f['images']} distinct {f['series']} frames requested at once (full-size PNG, "
        f"default window) from an app started for the round, against a fresh `ImageLoader("
        f"max_web_workers={f['workers']})` loading the same imageIds (INTERACTION, as the "
        "route asks); both warmed first, "
        f"Orthanc warmed by an untimed pass; median of {f['rounds']} interleaved rounds, "
        "CPU seconds of each process from `/proc` (the client runs in the benchmark's "
        f"process, on the same cores). App startup to its first answer: "
        f"{cold['httpx']['startup_s']:.2f} s. Cached: one rendered image, {concurrency} "
        "requests at a time, 20 rounds, latency per request.",
        "",
        *_table(["goal", "measured", "met"], goals),
        *_table(
            ["cold, 40 images", "s", "CPU s: app / loader", "CPU s: workers", "CPU s: client"],
            cpu_rows,
        ),
        *_table(
            [
                "cached, client",
                f"p50 ms ({concurrency} at once)",
                "p95 ms",
                "requests/s",
                "304 p50 ms",
                "one at a time p50 ms",
            ],
            cached_rows,
        ),
        f"PNG encoders on {enc['frames']} frames windowed to 8 bits, one thread, median ms "
        f"per frame (chosen: `{enc['chosen']}`). Windowing by table "
        f"{enc['window_table_ms']:.2f} ms, by arithmetic {enc['window_arithmetic_ms']:.2f} ms; "
        f"the whole `render_png` {enc['render_png_ms']:.2f} ms; renders/s on 1 and 2 threads "
        f"{enc['renders_per_s']['1']:.0f} and {enc['renders_per_s']['2']:.0f} "
        f"({_r(enc['thread_scaling'])}).",
        "",
        *_table(["encoder", "size", "shape", "ms", "KiB"], encoder_rows),
    ]


def fastapi_report(text: str, res: dict[str, Any]) -> str:
    """``text`` (the rendered report) with section 10 before its errors and figures."""
    return _insert_section(text, fastapi_sections(res))
