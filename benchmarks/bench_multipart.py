"""Split a WADO-RS-like multipart body: imageloader's parser against aiohttp's MultipartReader.

    python benchmarks/bench_multipart.py [--parts 32] [--part-kib 512] [--repeat 30]

The body imitates an Orthanc frame response (random payloads, so nothing in the
data resembles a boundary). Each contender starts from an aiohttp ``StreamReader``
already fed with the body in 64 KiB chunks, as the socket would deliver it:

- ``imageloader``: ``await stream.read()`` (what the loader's HTTP client does)
  then ``parse_multipart_related``, with and without per-part Content-Length;
- ``imageloader (parse only)``: the parser alone on a body already in memory;
- ``aiohttp.MultipartReader``: ``reader.next()`` and ``part.read()`` per part
  (each part a new bytearray; imageloader's parts are views into the one body).

Reported: the median and best wall time per body, and the throughput of the median.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable

from aiohttp import MultipartReader, StreamReader
from aiohttp.base_protocol import BaseProtocol

from imageloader.dicom.multipart import parse_multipart_related

BOUNDARY = "5e7843ff-8a0e-4586-b4a5-38785c34a3cc-59804f39-1bc7-4769-9497-839aed8f2"
CONTENT_TYPE = (
    'multipart/related; type="application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"; '
    f"boundary={BOUNDARY}"
)
CHUNK = 64 * 1024


def make_body(parts: int, part_size: int, *, content_length: bool) -> tuple[bytes, list[bytes]]:
    """An Orthanc-style multipart body of ``parts`` random payloads, and the payloads."""
    rng = random.Random(0)
    payloads = [rng.randbytes(part_size) for _ in range(parts)]
    chunks: list[bytes] = []
    for number, payload in enumerate(payloads, 1):
        headers = (
            f"--{BOUNDARY}\r\n"
            f"Content-Location: http://127.0.0.1:8042/dicom-web/studies/1/series/2/instances/3/frames/{number}\r\n"
            "Content-Type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1\r\n"
        )
        if content_length:
            headers += f"Content-Length: {len(payload)}\r\n"
        chunks += [headers.encode(), b"MIME-Version: 1.0\r\n\r\n", payload, b"\r\n"]
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks), payloads


class _NoTransport(BaseProtocol):
    """A protocol with no socket behind it: flow control has nothing to pause."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


def fed_stream(body: bytes) -> StreamReader:
    loop = asyncio.get_running_loop()
    # 2**16 is the read limit aiohttp's client gives a response's StreamReader.
    stream = StreamReader(_NoTransport(loop), 2**16, loop=loop)
    for i in range(0, len(body), CHUNK):
        stream.feed_data(body[i : i + CHUNK])
    stream.feed_eof()
    return stream


async def run_imageloader(stream: StreamReader) -> list[int]:
    body = await stream.read()
    return [len(part.data) for part in parse_multipart_related(body, CONTENT_TYPE)]


async def run_aiohttp(stream: StreamReader) -> list[int]:
    reader = MultipartReader({"Content-Type": CONTENT_TYPE}, stream)
    sizes = []
    while (part := await reader.next()) is not None:
        sizes.append(len(await part.read()))  # type: ignore[union-attr]
    return sizes


async def measure(
    body: bytes, run: Callable[[StreamReader], Awaitable[list[int]]], repeat: int
) -> list[float]:
    times = []
    for _ in range(repeat):
        stream = fed_stream(body)
        start = time.perf_counter()
        await run(stream)
        times.append(time.perf_counter() - start)
    return times


def measure_parse_only(body: bytes, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        parse_multipart_related(body, CONTENT_TYPE)
        times.append(time.perf_counter() - start)
    return times


def report(name: str, times: list[float], size: int) -> None:
    median = statistics.median(times)
    print(
        f"{name:<42} median {median * 1e3:8.3f} ms   best {min(times) * 1e3:8.3f} ms"
        f"   {size / median / 2**30:7.2f} GiB/s"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=32)
    parser.add_argument("--part-kib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    print(f"{args.parts} parts x {args.part_kib} KiB, {args.repeat} runs each")
    for content_length in (True, False):
        body, payloads = make_body(args.parts, args.part_kib * 1024, content_length=content_length)
        expected = [len(p) for p in payloads]
        # Both contenders must split the body correctly before their times count.
        parts = parse_multipart_related(body, CONTENT_TYPE)
        assert [bytes(p.data) for p in parts] == payloads
        assert await run_aiohttp(fed_stream(body)) == expected
        label = "with" if content_length else "without"
        print(f"-- parts {label} Content-Length ({len(body) / 2**20:.1f} MiB body)")
        report(
            "imageloader: stream.read() + parse",
            await measure(body, run_imageloader, args.repeat),
            len(body),
        )
        report(
            "imageloader (parse only, body in memory)",
            measure_parse_only(body, args.repeat),
            len(body),
        )
        report("aiohttp.MultipartReader", await measure(body, run_aiohttp, args.repeat), len(body))


if __name__ == "__main__":
    asyncio.run(main())
