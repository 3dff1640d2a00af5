"""Unit costs behind the profile: each step of the request path timed on its own.

Each figure is a median of repeated calls on this machine, per frame of the
benchmark's CT (512×512 int16; JPEG-LS frames of about 160 KiB):

- pickling a ``DecodedFrame`` (what a worker sends back) and the args of a task;
- a round trip through a one-process ``ProcessPoolExecutor`` returning 512 KiB,
  against one returning nothing: the IPC a decode pays beyond the codec;
- copying 512 KiB into shared memory (what a shared-memory result would cost);
- ``bytes(memoryview)`` of a frame (``DecodePool.run`` copies each frame);
- multipart split of a one-frame response;
- gzip: the server's cost (Orthanc's answer time with and without gzip, one
  request at a time) and the client's (inflating the body on the loop);
- requests per HTJ2K frame (Orthanc refuses it "as stored" first).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle
import statistics
import time
import zlib
from collections.abc import Callable
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from imageloader.decode.params import DecodeOptions
from imageloader.decode.worker import decode_frame
from imageloader.dicom.multipart import parse_multipart_related

from .ceilings import pixel_params
from .environment import ACCEPT, BenchEnv
from .pipelines import close_loader, open_loader

__all__ = ["run_costs"]


def _ms(fn: Callable[[], Any], repeat: int = 50) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _echo_big(data: bytes) -> np.ndarray:
    return np.zeros((512, 512), np.int16)


def _echo_none(data: bytes) -> None:
    return None


def _shared_memory_copy_ms(pixels: np.ndarray) -> float:
    shm = shared_memory.SharedMemory(create=True, size=pixels.nbytes)
    try:
        views = [np.ndarray(pixels.shape, pixels.dtype, buffer=shm.buf)]
        ms = _ms(lambda: np.copyto(views[0], pixels))
        views.clear()  # the view must go before the segment closes
        return ms
    finally:
        shm.close()
        shm.unlink()


def _server_ms(env: BenchEnv, path: str, accept: str, encoding: str) -> tuple[float, bytes]:
    headers = {"Accept": accept, "Accept-Encoding": encoding}
    response = env.server.request("GET", path, headers=headers)
    ms = _ms(lambda: env.server.request("GET", path, headers=headers), repeat=15)
    return ms, response.body


async def run_costs(env: BenchEnv, log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    jls = env.series["jpeg-ls"]
    path = jls.frame_urls("/dicom-web")[0]
    response = env.server.request("GET", path, headers={"Accept": ACCEPT})
    content_type = response.headers["Content-Type"]
    [part] = parse_multipart_related(response.body, content_type)
    frame = bytes(part.data)
    params = pixel_params(jls)
    decoded = decode_frame(frame, params)
    out["decode_frame_jpeg_ls_ms"] = _ms(lambda: decode_frame(frame, params))
    out["pickle_result_ms"] = _ms(lambda: pickle.loads(pickle.dumps(decoded, protocol=5)))
    args = (frame, params, DecodeOptions(), "wadors:x", 1 << 28)
    out["pickle_args_ms"] = _ms(lambda: pickle.loads(pickle.dumps(args, protocol=5)))
    out["memoryview_copy_ms"] = _ms(lambda: bytes(memoryview(response.body)[: len(frame)]))
    out["multipart_split_ms"] = _ms(
        lambda: parse_multipart_related(response.body, content_type), repeat=200
    )
    out["shared_memory_copy_ms"] = _shared_memory_copy_ms(decoded.pixels)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        pool.submit(_echo_none, b"").result()
        big = _ms(lambda: pool.submit(_echo_big, frame).result(), repeat=100)
        small = _ms(lambda: pool.submit(_echo_none, frame).result(), repeat=100)
        empty = _ms(lambda: pool.submit(_echo_none, b"").result(), repeat=100)
    out["ipc_roundtrip_frame_in_512k_out_ms"] = big
    out["ipc_roundtrip_frame_in_nothing_out_ms"] = small
    out["ipc_roundtrip_empty_ms"] = empty
    out["ipc_result_512k_ms"] = big - small
    for name in ("explicit", "jpeg-ls"):
        series = env.series[name]
        url = series.frame_urls("/dicom-web")[1]
        gzip_ms, gz_body = _server_ms(env, url, ACCEPT, "gzip")
        identity_ms, _ = _server_ms(env, url, ACCEPT, "identity")
        inflate = _ms(lambda b=gz_body: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(b))
        out[f"gzip_{name}"] = {
            "server_answer_gzip_ms": gzip_ms,
            "server_answer_identity_ms": identity_ms,
            "server_gzip_cost_ms": gzip_ms - identity_ms,
            "client_inflate_ms": inflate,
            "gzip_kib": len(gz_body) / 1024,
        }
    loader, ids = await open_loader(env, env.series["htj2k"], warm=False)
    try:
        before = loader.http.requests
        await loader.load_and_cache_images(ids[:10])
        out["htj2k_requests_per_frame"] = (loader.http.requests - before) / 10
    finally:
        await close_loader(loader)
    log(f"  costs: {out}")
    return out
