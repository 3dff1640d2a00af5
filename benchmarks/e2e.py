"""Measurements 1, 2, 3 (workers) and 7 (wadouri): one series at a time, every side interleaved.

Per transfer syntax, each round runs, one after another:

- ``il_default``: ``ImageLoader()`` (every setting default; ``max_web_workers``
  resolves to the core count, 2 here);
- ``il_w2`` / ``il_w1``: ``max_web_workers`` 2 and 1 with ``Accept-Encoding:
  identity`` (the transport that does not make Orthanc's gzip the bottleneck), for
  the worker scaling;
- ``il_wadouri`` / ``il_wadors_same``: the first ``gzip_frames`` instances through
  ``wadouri:`` (whole Part 10 objects) and through ``wadors:``, same loader;
- ``peer`` / ``peer_identity``: dicomweb-client + pydicom, sequential, gzip (its
  default) and identity;
- the ceilings: ``fetch_gzip`` and ``fetch_identity`` (aiohttp at the best
  concurrency of a sweep run first) and ``decode`` (process pool, bytes in memory).

Every figure is the median over rounds, in frames/s. Runs whose transport is gzip
(other than ``il_default``) use the first ``gzip_frames`` frames: Orthanc gzips about
20 uncompressed frames/s here, and a rate does not need the whole series.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from imageloader import ImageLoader

from .ceilings import SWEEP, DecodeCeiling, FetchCeiling, frames_in_memory, pixel_params, sweep
from .environment import BenchEnv, Series
from .pipelines import IDENTITY, Peer, close_loader, open_loader, timed_load, timed_load_cpu

__all__ = ["run_e2e"]

Log = Callable[[str], None]


async def run_e2e(env: BenchEnv, log: Log) -> dict[str, Any]:
    """Every series: the pipelines side by side, and their ceilings."""
    fetch = FetchCeiling(env)
    decode = DecodeCeiling()
    out: dict[str, Any] = {}
    try:
        for name, series in env.series.items():
            out[name] = await _one_series(env, series, fetch, decode, log)
    finally:
        decode.close()
        await fetch.aclose()
    return out


async def _one_series(
    env: BenchEnv, series: Series, fetch: FetchCeiling, decode: DecodeCeiling, log: Log
) -> dict[str, Any]:
    profile = env.profile
    n = len(series.sop_uids)
    peer_n = min(n, profile.peer_frames)
    # Orthanc gzips at ~20 frames/s on these cores: rates over gzip use fewer frames.
    gzip_n = min(n, profile.gzip_frames)
    # The concurrency sweep (100 frames a point; gzip: 60 frames, two levels).
    probe = min(n, 100)
    sweeps = {
        "identity": await sweep(fetch, series, "identity", SWEEP, probe),
        "gzip": await sweep(fetch, series, "gzip", (4, 16), min(probe, 60)),
    }
    best = {t: max(rates, key=rates.__getitem__) for t, rates in sweeps.items()}
    frames = await frames_in_memory(env, series)
    params = pixel_params(series)

    loaders: list[ImageLoader] = []
    peers: list[Peer] = []
    try:
        default, ids = await open_loader(env, series)
        loaders.append(default)
        w2, _ = await open_loader(env, series, max_web_workers=2, http=IDENTITY)
        loaders.append(w2)
        w1, _ = await open_loader(env, series, max_web_workers=1, http=IDENTITY)
        loaders.append(w1)
        uri_ids = series.wadouri_ids(env.wado)[:gzip_n]
        wadors_ids = ids[:gzip_n]
        peer = Peer(env, series)
        peers.append(peer)
        peer_identity = Peer(env, series, identity=True)
        peers.append(peer_identity)
        cpu_samples: list[dict[str, float]] = []

        async def default_with_cpu() -> float:
            seconds, cpu = await timed_load_cpu(default, ids, env.server.pid)
            cpu_samples.append(cpu)
            return seconds

        runs: dict[str, tuple[int, Any]] = {
            "il_default": (n, default_with_cpu),
            "il_w2": (n, lambda: timed_load(w2, ids)),
            "il_w1": (n, lambda: timed_load(w1, ids)),
            "il_wadouri": (gzip_n, lambda: timed_load(default, uri_ids)),
            "il_wadors_same": (gzip_n, lambda: timed_load(default, wadors_ids)),
            "fetch_gzip": (gzip_n, lambda: fetch.run(series, "gzip", best["gzip"], gzip_n)),
            "fetch_identity": (n, lambda: fetch.run(series, "identity", best["identity"])),
            "decode": (n, lambda: decode.run(frames, params)),
            "peer": (peer_n, lambda: peer.run(peer_n)),
            "peer_identity": (peer_n, lambda: peer_identity.run(peer_n)),
        }
        samples: dict[str, list[float]] = {k: [] for k in runs}
        peer_split: list[dict[str, float]] = []
        for round_ in range(profile.rounds):
            for key, (count, run) in runs.items():
                result = run()
                seconds = await result if hasattr(result, "__await__") else result
                samples[key].append(count / seconds)
            peer_split.append({k: v / peer_n * 1000 for k, v in peer.split.items()})
            log(
                f"  {series.name} round {round_ + 1}: "
                + ", ".join(f"{k} {v[-1]:.0f}" for k, v in samples.items())
            )
    finally:
        for loader in loaders:
            await close_loader(loader)
        for p in peers:
            p.close()
    rates = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "frames": n,
        "peer_frames": peer_n,
        "gzip_subset_frames": gzip_n,
        "compressed_kib_per_frame": sum(map(len, frames)) / n / 1024,
        "fps": rates,
        "samples": samples,
        "sweep": sweeps,
        "best_concurrency": best,
        "peer_ms_per_frame": {
            k: statistics.median(s[k] for s in peer_split) for k in peer_split[0]
        },
        "ratios": _ratios(rates),
        # Per process, CPU ms a frame while the default loader loads the series, and
        # the cores all of them kept busy (median of rounds).
        "cpu_ms_per_frame": {
            k: statistics.median(c[k] for c in cpu_samples) for k in cpu_samples[0]
        },
    }


def _ratios(r: dict[str, float]) -> dict[str, float]:
    lower_gzip = min(r["fetch_gzip"], r["decode"])
    lower_identity = min(r["fetch_identity"], r["decode"])
    # Fetch and decode share the same two cores (and Orthanc): if both are CPU-bound
    # their times add up, which bounds the end-to-end rate below the lower ceiling.
    shared_gzip = 1 / (1 / r["fetch_gzip"] + 1 / r["decode"])
    shared_identity = 1 / (1 / r["fetch_identity"] + 1 / r["decode"])
    return {
        "default_vs_peer": r["il_default"] / r["peer"],
        "identity_vs_peer_identity": r["il_w2"] / r["peer_identity"],
        "identity_vs_peer": r["il_w2"] / r["peer"],
        "default_vs_lower_ceiling": r["il_default"] / lower_gzip,
        "identity_vs_lower_ceiling": r["il_w2"] / lower_identity,
        "default_vs_shared_bound": r["il_default"] / shared_gzip,
        "identity_vs_shared_bound": r["il_w2"] / shared_identity,
        "workers_2_vs_1": r["il_w2"] / r["il_w1"],
        "wadouri_vs_wadors": r["il_wadouri"] / r["il_wadors_same"],
        "identity_vs_default": r["il_w2"] / r["il_default"],
    }
