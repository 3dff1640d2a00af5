"""Measurement 4: INTERACTION latency while a large PREFETCH runs, against an idle loader.

One loader (default settings) with the metadata of every series registered. The
INTERACTION loads are the first frames of the JPEG-LS series, one at a time with a
short pause between them (a user scrolling); the PREFETCH is ``prefetch_images``
frames of the other series. Rounds alternate idle and busy, the cache purged
before each, so every load fetches and decodes.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from imageloader import ImageLoader
from imageloader import events as ev
from imageloader.dicomweb import add_series_metadata

from .environment import BenchEnv
from .pipelines import IDENTITY

__all__ = ["run_priorities"]

Log = Callable[[str], None]
INTERACTIVE_SERIES = "jpeg-ls"
PAUSE = 0.02  # seconds between two interaction loads


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _interactions(loader: ImageLoader, ids: list[str]) -> list[float]:
    latencies = []
    for image_id in ids:
        start = time.perf_counter()
        await loader.load_and_cache_image(image_id, request_type="interaction")
        latencies.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(PAUSE)
    return latencies


async def _run(env: BenchEnv, log: Log, **options: Any) -> dict[str, Any]:
    profile = env.profile
    loader = ImageLoader(max_cache_size_bytes=4 << 30, **options)
    async with loader:
        by_series = {}
        for name, series in env.series.items():
            by_series[name] = await add_series_metadata(
                loader, env.dicomweb, series.study_uid, series.series_uid
            )
        await loader.decode_pool.warm()
        interactive = by_series.pop(INTERACTIVE_SERIES)[: profile.interaction_loads]
        # Round-robin over the other series, so the prefetch mixes every syntax.
        mixed = [i for group in zip(*by_series.values(), strict=False) for i in group]
        prefetch = mixed[: profile.prefetch_images]
        idle: list[float] = []
        busy: list[float] = []
        prefetch_rates = []
        overlapped = True
        for _ in range(profile.rounds):
            loader.cache.purge()
            idle += await _interactions(loader, interactive)
            loader.cache.purge()
            started = time.perf_counter()
            task = asyncio.ensure_future(
                loader.load_and_cache_images(prefetch, request_type="prefetch")
            )
            # Let the prefetch fill every slot and queue before the user acts.
            warmed = asyncio.Event()
            loaded = [0]

            def count(
                *_: object, loaded: list[int] = loaded, warmed: asyncio.Event = warmed
            ) -> None:
                loaded[0] += 1
                if loaded[0] >= 20:
                    warmed.set()

            off = loader.events.on(ev.IMAGE_LOADED, count)
            await asyncio.wait_for(warmed.wait(), timeout=60)
            off()
            busy += await _interactions(loader, interactive)
            in_flight = loader.request_pool.running("prefetch") + loader.request_pool.waiting()
            loaded_during = len(loader.cache) - len(interactive)
            still_running = not task.done()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            overlapped = overlapped and still_running
            prefetch_rates.append(loaded_during / (time.perf_counter() - started))
            log(
                f"  priorities: idle p95 {_percentile(idle, 0.95):.0f} ms, busy p95 "
                f"{_percentile(busy, 0.95):.0f} ms ({in_flight} prefetch loads still queued)"
            )
    result = {
        "prefetch_images": len(prefetch),
        "interaction_loads": len(idle),
        "idle_p50_ms": statistics.median(idle),
        "idle_p95_ms": _percentile(idle, 0.95),
        "busy_p50_ms": statistics.median(busy),
        "busy_p95_ms": _percentile(busy, 0.95),
        "prefetch_fps_during": statistics.median(prefetch_rates),
        "prefetch_outlasted_interactions": overlapped,
        "idle_ms": idle,
        "busy_ms": busy,
    }
    result["p95_ratio"] = result["busy_p95_ms"] / result["idle_p95_ms"]
    result["p50_ratio"] = result["busy_p50_ms"] / result["idle_p50_ms"]
    return result


async def run_priorities(env: BenchEnv, log: Log, variants: bool = False) -> dict[str, Any]:
    """Default settings; with ``variants``, also two configurations that may help."""
    result = await _run(env, log)
    if variants:
        result["variants"] = {
            "prefetch_limit_4": await _run(env, log, request_limits={"prefetch": 4}),
            "identity": await _run(env, log, http=IDENTITY),
            "identity_prefetch_limit_4": await _run(
                env, log, http=IDENTITY, request_limits={"prefetch": 4}
            ),
        }
    return result
