"""Measurement 6: every frame of the multi-frame instance, batched against one request per frame.

``wadors:`` batches the frames of one instance into ``frames/1,2,...`` requests
(up to ``Limits.max_frames_per_request``, ``requests_per_instance`` at once); with
``wadors_options(loader).batch_frames = False`` each frame is its own request.
Both with the default transport (Orthanc gzips each response) and with
``Accept-Encoding: identity``; rounds interleave the four.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from imageloader import ImageLoader
from imageloader.dicom.wadors import wadors_options

from .environment import BenchEnv
from .pipelines import IDENTITY, close_loader, open_loader, timed_load

__all__ = ["run_multiframe"]


async def run_multiframe(env: BenchEnv, log: Callable[[str], None]) -> dict[str, Any]:
    series = env.multiframe
    loaders: dict[str, ImageLoader] = {}
    ids: list[str] = []
    try:
        for key, batch, http in (
            ("batch_gzip", True, None),
            ("per_frame_gzip", False, None),
            ("batch_identity", True, IDENTITY),
            ("per_frame_identity", False, IDENTITY),
        ):
            options = {"http": http} if http is not None else {}
            loader, ids = await open_loader(env, series, **options)
            wadors_options(loader).batch_frames = batch
            loaders[key] = loader
        samples: dict[str, list[float]] = {k: [] for k in loaders}
        requests: dict[str, int] = {}
        # Orthanc serves ~2 single frames/s of a 120 MB instance here: one request per
        # frame runs on the first quarter of the frames (its rate is per request).
        per_frame_ids = ids[: max(24, len(ids) // 4)]
        for _ in range(env.profile.rounds):
            for key, loader in loaders.items():
                subset = per_frame_ids if key.startswith("per_frame") else ids
                before = loader.http.requests
                samples[key].append(len(subset) / await timed_load(loader, subset))
                requests[key] = loader.http.requests - before
            log("  multiframe: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in samples.items()))
    finally:
        for loader in loaders.values():
            await close_loader(loader)
    fps = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "frames": len(ids),
        "per_frame_subset": len(per_frame_ids),
        "fps": fps,
        "samples": samples,
        "requests": requests,
        "batch_vs_per_frame_gzip": fps["batch_gzip"] / fps["per_frame_gzip"],
        "batch_vs_per_frame_identity": fps["batch_identity"] / fps["per_frame_identity"],
    }
