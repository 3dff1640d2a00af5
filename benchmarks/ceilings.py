"""The two ceilings an end-to-end load cannot beat, measured in the same run.

- **fetch only**: plain aiohttp, ``N`` GETs at a time of each frame (the Accept
  header ``wadors:`` sends), bodies read whole, nothing parsed or decoded. Swept
  over the concurrency first; the best is then measured beside the end-to-end runs.
  ``gzip`` is aiohttp's default ``Accept-Encoding`` (Orthanc then gzips every
  frame); ``identity`` asks it not to.
- **decode only**: the frames' bytes already in memory, a ``ProcessPoolExecutor``
  of every core mapping ``imageloader.decode.worker.decode_frame`` over them
  (chunks of 8, so the IPC is amortised as well as it can be).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import multiprocessing
import time

import aiohttp

from imageloader.decode.params import DecodeOptions, PixelParams
from imageloader.decode.worker import decode_frame
from imageloader.dicom.multipart import parse_multipart_related

from .environment import ACCEPT, BenchEnv, Series, cores

__all__ = ["DecodeCeiling", "FetchCeiling", "frames_in_memory", "pixel_params", "sweep"]

SWEEP = (1, 2, 4, 8, 16, 32)
TRANSPORTS = {"gzip": {}, "identity": {"Accept-Encoding": "identity"}}


def pixel_params(series: Series, syntax: str | None = None) -> PixelParams:
    """The pixel module of the benchmark's CT (see :mod:`benchmarks.data`)."""
    return PixelParams(
        transfer_syntax_uid=syntax or series.transfer_syntax_uid,
        rows=512,
        columns=512,
        samples_per_pixel=1,
        bits_allocated=16,
        bits_stored=16,
        pixel_representation=0,
        photometric_interpretation="MONOCHROME2",
        rescale_slope=1.0,
        rescale_intercept=-1024.0,
        modality="CT",
    )


class FetchCeiling:
    """aiohttp alone: GET every frame of a series, ``concurrency`` at a time."""

    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.sessions: dict[str, aiohttp.ClientSession] = {}

    async def session(self, transport: str) -> aiohttp.ClientSession:
        if transport not in self.sessions:
            connector = aiohttp.TCPConnector(limit=64, limit_per_host=64)
            self.sessions[transport] = aiohttp.ClientSession(
                connector=connector, headers=TRANSPORTS[transport], read_bufsize=1 << 20
            )
        return self.sessions[transport]

    async def run(
        self, series: Series, transport: str, concurrency: int, count: int | None = None
    ) -> float:
        """Seconds to fetch the frames (all, or the first ``count``)."""
        session = await self.session(transport)
        urls = series.frame_urls(self.env.dicomweb)[:count]
        accept = {"Accept": _accept(series)}
        gate = asyncio.Semaphore(concurrency)

        async def get(url: str) -> int:
            async with gate, session.get(url, headers=accept) as response:
                response.raise_for_status()
                return len(await response.read())

        start = time.perf_counter()
        await asyncio.gather(*(get(url) for url in urls))
        return time.perf_counter() - start

    async def aclose(self) -> None:
        for session in self.sessions.values():
            await session.close()


def _accept(series: Series) -> str:
    # Orthanc 1.10 cannot send HTJ2K "as stored" (HTTP 500); wadors then asks for
    # explicit VR LE and gets the codestream: the ceiling asks that way at once.
    if series.name == "htj2k":
        return ACCEPT.replace("transfer-syntax=*", "transfer-syntax=1.2.840.10008.1.2.1")
    return ACCEPT


async def sweep(
    ceiling: FetchCeiling, series: Series, transport: str, levels: tuple[int, ...], count: int
) -> dict[int, float]:
    """Frames/s at each concurrency level (the first ``count`` frames)."""
    rates = {}
    for level in levels:
        rates[level] = count / await ceiling.run(series, transport, level, count)
    return rates


async def frames_in_memory(env: BenchEnv, series: Series) -> list[bytes]:
    """Every frame's bytes, as the server sends them (fetched once, without gzip)."""
    async with aiohttp.ClientSession(headers=TRANSPORTS["identity"]) as session:
        gate = asyncio.Semaphore(8)

        async def get(url: str) -> bytes:
            async with gate, session.get(url, headers={"Accept": _accept(series)}) as response:
                response.raise_for_status()
                body = await response.read()
                [part] = parse_multipart_related(body, response.headers["Content-Type"])
                return bytes(part.data)

        return list(await asyncio.gather(*(get(u) for u in series.frame_urls(env.dicomweb))))


class DecodeCeiling:
    """``decode_frame`` over frames in memory, on a process pool of every core."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or cores()
        self.pool = concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn")
        )
        list(self.pool.map(_warm, range(self.workers)))  # start and import, untimed

    def run(self, frames: list[bytes], params: PixelParams) -> float:
        start = time.perf_counter()
        results = self.pool.map(
            decode_frame, frames, itertools.repeat(params), itertools.repeat(_OPTIONS), chunksize=8
        )
        for result in results:
            if result.pixels.shape != (512, 512):
                raise AssertionError(f"decoded {result.pixels.shape}")
        return time.perf_counter() - start

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


_OPTIONS = DecodeOptions()


def _warm(_: int) -> int:
    import imageloader.decode.codecs  # noqa: F401  (the worker's imports, before timing)

    time.sleep(0.05)  # so each process takes one task
    return 0
