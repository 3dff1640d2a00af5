"""Measurement 5: peak RSS while prefetching a series twice the size of the cache.

Runs in a fresh Python process per series (``python -m benchmarks.memory``), so
nothing measured earlier inflates the main process. The loader has default
settings except ``max_cache_size_bytes`` = half the series' decoded size; the
series is prefetched with ``iter_images`` and each image dropped at once, as a
viewer's prefetch does (the cache alone keeps images). A thread samples
``VmRSS`` of the main process and of every descendant (decode workers, the
multiprocessing resource tracker) every 10 ms from ``/proc``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["run_memory"]

MIB = 1 << 20
FRAME_BYTES = 512 * 512 * 2  # int16 HU after prescale


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            found += [child, *_children(child)]
    return found


class Sampler(threading.Thread):
    """Peak RSS of this process and of its descendants, sampled."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.pid = __import__("os").getpid()
        self.stop = threading.Event()
        self.peak_main = self.peak_children = self.peak_total = 0
        self.children: list[int] = []

    def run(self) -> None:
        last_scan = 0.0
        while not self.stop.is_set():
            if time.monotonic() - last_scan > 0.5:
                self.children = _children(self.pid)
                last_scan = time.monotonic()
            main = _rss(self.pid)
            children = sum(_rss(c) for c in self.children)
            self.peak_main = max(self.peak_main, main)
            self.peak_children = max(self.peak_children, children)
            self.peak_total = max(self.peak_total, main + children)
            time.sleep(0.01)


async def _measure(args: dict[str, Any]) -> dict[str, Any]:
    from imageloader import ImageLoader
    from imageloader.dicomweb import add_series_metadata

    limit = args["frames"] * FRAME_BYTES // 2
    async with ImageLoader(max_cache_size_bytes=limit) as loader:
        ids = await add_series_metadata(loader, args["dicomweb"], args["study"], args["series"])
        await loader.decode_pool.warm()
        sampler = Sampler()
        baseline_main = _rss(sampler.pid)
        baseline_children = sum(_rss(c) for c in _children(sampler.pid))
        sampler.start()
        start = time.perf_counter()
        count = 0
        async for _ in loader.iter_images(ids):
            count += 1
        seconds = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
        cached = loader.cache.size_bytes
    return {
        "cache_limit_mib": limit / MIB,
        "series_decoded_mib": args["frames"] * FRAME_BYTES / MIB,
        "images": count,
        "seconds": seconds,
        "cache_held_mib": cached / MIB,
        "baseline_main_mib": baseline_main / MIB,
        "baseline_workers_mib": baseline_children / MIB,
        "peak_main_mib": sampler.peak_main / MIB,
        "peak_workers_mib": sampler.peak_children / MIB,
        "peak_total_mib": sampler.peak_total / MIB,
        "main_over_limit_mib": (sampler.peak_main - limit) / MIB,
        "main_growth_mib": (sampler.peak_main - baseline_main) / MIB,
    }


def run_memory(
    env: Any, log: Any, names: tuple[str, ...] = ("jpeg-ls", "explicit")
) -> dict[str, Any]:
    """One subprocess per series; returns what each measured."""
    out = {}
    root = Path(__file__).resolve().parents[1]
    for name in names:
        series = env.series[name]
        args = {
            "dicomweb": env.dicomweb,
            "study": series.study_uid,
            "series": series.series_uid,
            "frames": len(series.sop_uids),
        }
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", json.dumps(args)],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"memory run for {name} failed:\n{done.stderr[-2000:]}")
        out[name] = json.loads(done.stdout.strip().splitlines()[-1])
        log(f"  memory {name}: {out[name]}")
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_measure(json.loads(sys.argv[1])))))
