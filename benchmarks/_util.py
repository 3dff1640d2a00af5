"""Timing helpers: interleaved repeats so a noisy neighbour hits both sides alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable


async def best_rate(
    runs: dict[str, Callable[[int], Awaitable[None]]], n: int, repeats: int = 7
) -> dict[str, float]:
    """Operations per second for each named run: the median of ``repeats`` rounds.

    The rounds interleave the runs (A, B, A, B, ...) so that load from other
    processes on a shared machine falls on every run alike.
    """
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            await run(n)
            samples[name].append(n / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in samples.items()}
