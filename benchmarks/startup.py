"""Measurement 3, the rest: cold start against warm, time to first image, decode-pool scaling.

- **cold vs warm** (``Accept-Encoding: identity``, so Orthanc's gzip does not hide
  it): a new ``ImageLoader`` whose series metadata is registered but
  whose decode workers have not started (the first load starts them) against the
  same loader once warm (cache purged): time to the first image of
  ``iter_images`` and to the whole series. Also ``DecodePool.warm()`` alone.
- **decode-pool scaling**: ``DecodePool(k)`` for k = 1..cores running
  ``decode_frame`` on frames already in memory (all submitted at once), against
  pydicom decoding the same frames in-process (``pixel_array`` +
  ``apply_modality_lut``), ``decode_frame`` in-process, and a bare
  ``ProcessPoolExecutor`` of k processes (chunks of 8): the scaling this machine
  gives at that moment, to read the pool's against. Interleaved rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from imageloader.decode.params import DecodeOptions, PixelParams
from imageloader.decode.pool import DecodePool
from imageloader.decode.worker import decode_frame

from .ceilings import DecodeCeiling, frames_in_memory, pixel_params
from .environment import BenchEnv, Series, cores
from .pipelines import IDENTITY, close_loader, open_loader

__all__ = ["run_decode_scaling", "run_startup"]

Log = Callable[[str], None]
STARTUP_SERIES = ("explicit", "jpeg-ls")


async def _first_and_all(loader: Any, ids: list[str]) -> tuple[float, float]:
    loader.cache.purge()
    start = time.perf_counter()
    first = None
    async for _ in loader.iter_images(ids):
        if first is None:
            first = time.perf_counter() - start
    assert first is not None
    return first, time.perf_counter() - start


async def run_startup(env: BenchEnv, log: Log) -> dict[str, Any]:
    """Cold (workers not started) against warm, per series in STARTUP_SERIES."""
    out: dict[str, Any] = {}
    pool_start = []
    for _ in range(env.profile.cold_repeats):
        pool = DecodePool(cores())
        start = time.perf_counter()
        await pool.warm()
        pool_start.append(time.perf_counter() - start)
        await pool.aclose()
    out["pool_warm_seconds"] = statistics.median(pool_start)
    for name in STARTUP_SERIES:
        series = env.series[name]
        cold_first, cold_all, warm_first, warm_all = [], [], [], []
        for _ in range(env.profile.cold_repeats):
            loader, ids = await open_loader(env, series, warm=False, http=IDENTITY)
            try:
                first, whole = await _first_and_all(loader, ids)
                cold_first.append(first)
                cold_all.append(whole)
                first, whole = await _first_and_all(loader, ids)
                warm_first.append(first)
                warm_all.append(whole)
            finally:
                await close_loader(loader)
        med = statistics.median
        out[name] = {
            "cold_first_ms": med(cold_first) * 1000,
            "warm_first_ms": med(warm_first) * 1000,
            "cold_series_s": med(cold_all),
            "warm_series_s": med(warm_all),
            "cold_vs_warm_first": med(cold_first) / med(warm_first),
            "cold_vs_warm_series": med(cold_all) / med(warm_all),
        }
        log(f"  startup {name}: {out[name]}")
    return out


def _pydicom_decoder(series: Series, params: PixelParams) -> Callable[[bytes], np.ndarray]:
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.pixels import apply_modality_lut

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = series.transfer_syntax_uid
    ds.Rows, ds.Columns, ds.SamplesPerPixel = params.rows, params.columns, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept, ds.Modality = 1, -1024, "CT"
    encapsulated = ds.file_meta.TransferSyntaxUID.is_encapsulated

    def decode(frame: bytes) -> np.ndarray:
        if encapsulated:
            ds.add_new(0x7FE00010, "OB", encapsulate([frame]))
            ds["PixelData"].is_undefined_length = True
        else:
            ds.add_new(0x7FE00010, "OW", frame)
        return apply_modality_lut(ds.pixel_array, ds)

    return decode


async def run_decode_scaling(env: BenchEnv, log: Log) -> dict[str, Any]:
    """Decode frames/s: DecodePool(1..cores) against in-process decoders, per series."""
    import asyncio

    out: dict[str, Any] = {}
    levels = list(range(1, cores() + 1))
    pools = {k: DecodePool(k, task_timeout=None) for k in levels}
    # The machine's own scaling, as a reference: a bare process pool, chunks of 8.
    executors = {k: DecodeCeiling(k) for k in levels}
    options = DecodeOptions()
    try:
        for pool in pools.values():
            await pool.warm()
        for name, series in env.series.items():
            frames = (await frames_in_memory(env, series))[: env.profile.decode_frames]
            params = pixel_params(series)
            pydicom_decode = _pydicom_decoder(series, params)

            async def with_pool(
                pool: DecodePool, frames: list[bytes] = frames, params: PixelParams = params
            ) -> None:
                await asyncio.gather(*(pool.run(decode_frame, f, params, options) for f in frames))

            samples: dict[str, list[float]] = {f"pool_{k}": [] for k in levels}
            samples.update({f"executor_{k}": [] for k in levels})
            samples["in_process"] = []
            samples["pydicom"] = []
            for _ in range(env.profile.rounds):
                for k, pool in pools.items():
                    start = time.perf_counter()
                    await with_pool(pool)
                    samples[f"pool_{k}"].append(len(frames) / (time.perf_counter() - start))
                for k, executor in executors.items():
                    samples[f"executor_{k}"].append(len(frames) / executor.run(frames, params))
                start = time.perf_counter()
                for f in frames:
                    decode_frame(f, params, options)
                samples["in_process"].append(len(frames) / (time.perf_counter() - start))
                start = time.perf_counter()
                for f in frames:
                    pydicom_decode(f)
                samples["pydicom"].append(len(frames) / (time.perf_counter() - start))
            fps = {k: statistics.median(v) for k, v in samples.items()}
            top = fps[f"pool_{levels[-1]}"]
            out[name] = {
                "fps": fps,
                "samples": samples,
                "scaling": top / fps["pool_1"],
                "executor_scaling": fps[f"executor_{levels[-1]}"] / fps["executor_1"],
                "pool_vs_pydicom": top / fps["pydicom"],
                "pool_1_vs_in_process": fps["pool_1"] / fps["in_process"],
            }
            log(f"  decode {name}: " + ", ".join(f"{k} {v:.0f}" for k, v in fps.items()))
    finally:
        for pool in pools.values():
            await pool.aclose()
        for executor in executors.values():
            executor.close()
    return out
