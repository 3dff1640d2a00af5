"""Cache hits/s and the dispatcher's per-load overhead, each against its floor.

- cache hit: ``await loader.load_image(id)`` of a cached image, vs. the floor of an
  ``async def`` that only looks the image up in a dict. Goal: >= 100,000 hits/s.
- dispatch: a load of a no-op loader (scheme lookup, in-flight entry, task,
  request-pool slot, events, load-time stamp) vs. awaiting the same no-op loader
  directly; the difference is what the dispatcher costs per load.

Run: ``python -m benchmarks.bench_core`` (also part of ``python -m benchmarks``).
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np

from imageloader import Image, ImageLoader, LoadContext

from ._util import best_rate

N_HITS = 200_000
N_LOADS = 20_000


async def measure(n_hits: int = N_HITS, n_loads: int = N_LOADS) -> dict[str, float]:
    image = Image.from_array("noop:0", np.zeros((2, 2), np.uint8))

    async def noop(image_id: str, ctx: LoadContext) -> Image:
        return image

    results: dict[str, float] = {}
    async with ImageLoader(max_web_workers=0, builtin_loaders=False) as loader:
        loader.register_image_loader("noop", noop)
        await loader.load_and_cache_image("noop:0")
        table = {"noop:0": image}

        async def floor_lookup(n: int) -> None:
            async def get(key: str) -> Image:
                return table[key]

            for _ in range(n):
                await get("noop:0")

        async def cache_hits(n: int) -> None:
            for _ in range(n):
                await loader.load_image("noop:0")

        rates = await best_rate({"floor": floor_lookup, "hits": cache_hits}, n_hits)
        results["cache_hits_per_s"] = rates["hits"]
        results["dict_floor_per_s"] = rates["floor"]
        results["cache_hit_vs_floor"] = rates["hits"] / rates["floor"]

        ctx = LoadContext(loader, "noop:1", loader.default_options, "interaction", 0)  # type: ignore[arg-type]
        counter = iter(range(10**9))

        async def direct(n: int) -> None:
            for _ in range(n):
                await noop("noop:1", ctx)

        async def dispatched(n: int) -> None:
            for _ in range(n):
                await loader.load_image(f"noop:{next(counter)}")

        rates = await best_rate({"direct": direct, "dispatched": dispatched}, n_loads)
        results["dispatched_loads_per_s"] = rates["dispatched"]
        results["dispatch_overhead_us"] = 1e6 * (1 / rates["dispatched"] - 1 / rates["direct"])
    return results


def main() -> None:
    results = asyncio.run(measure())
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
