"""Side by side with Cornerstone, loaders: the same WADO-RS frames, Cornerstone3D and imageloader.

Cornerstone's side is ``cornerstone/loader.mjs``: ``@cornerstonejs/dicom-image-loader``
5.14 in Node with small shims (``navigator``, ``XMLHttpRequest`` from ``xhr2``,
``Worker`` from ``web-worker`` — worker threads —, a ``document`` without WebGL,
``window`` timers), ``core.init()`` and ``init({maxWebWorkers: 2, wasmBasePath})``;
the series metadata from one ``.../metadata`` request through
``wadors.metaDataManager.add``; then ``imageLoader.loadAndCacheImages`` (its
defaults: prefetch requests, 5 at a time, decoded in the 2 workers, prescaled).

imageloader's side: ``ImageLoader(max_web_workers=2)`` as a user runs it (nothing
else set, no manual warm-up; ``add_series_metadata``, then
``load_and_cache_images``), and the same loader with ``await
loader.decode_pool.warm()`` first. xhr2 sends no ``Accept-Encoding``, so Orthanc
answers Cornerstone uncompressed; aiohttp asks for gzip, which Orthanc then applies
to every frame: ``identity`` is the default loader with ``Accept-Encoding:
identity`` (and ``warm()``), the same transport as Cornerstone's here.

Per series (the benchmark's CT phantom, the first ``FRAMES`` instances of each
syntax): every side does one untimed load (its pixels are compared with
Cornerstone's: both give the modality LUT applied, int16 here), then ``ROUNDS``
interleaved timed loads, cache purged before each. Node gets one more untimed load
on the first series, for its JIT (the first loads of a fresh process run slower).
CPU is the client's: Node's ``process.cpuUsage()`` (its worker threads included);
ours ``getrusage`` of this process plus ``/proc/<pid>/stat`` of the decode workers.
Orthanc's is excluded.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from imageloader import Image, ImageLoader
from imageloader.dicomweb import add_series_metadata

from .cornerstone_node import NodeScript, missing_node, prepare, versions
from .environment import ACCEPT, BenchEnv, Series
from .pipelines import IDENTITY

__all__ = ["run_cornerstone_loader"]

Log = Callable[[str], None]
SERIES = ("jpeg-ls", "jpeg-lossless", "rle", "j2k", "htj2k")
FRAMES = 100
ROUNDS = 3
WORKERS = 2
#: imageloader's configurations: (name, loader options, warm() first).
OURS: tuple[tuple[str, dict[str, Any], bool], ...] = (
    ("imageloader", {}, False),
    ("imageloader_warm", {}, True),
    ("imageloader_identity", {"http": IDENTITY}, True),
)
_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """User + system seconds of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _relabel(env: BenchEnv, series: Series) -> str | None:
    """The syntax to relabel frames with when Orthanc refuses them as stored (HTJ2K on 1.10)."""
    url = series.frame_urls(env.dicomweb)[0]
    request = urllib.request.Request(url, headers={"Accept": ACCEPT})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            response.read()
        return None
    except urllib.error.HTTPError:
        return series.transfer_syntax_uid


class Ours:
    """One imageloader configuration on one series."""

    def __init__(self, env: BenchEnv, series: Series, options: dict[str, Any], warm: bool) -> None:
        self.env, self.series, self.options, self.warm = env, series, options, warm
        self.loader: ImageLoader | None = None
        self.ids: list[str] = []

    async def open(self, count: int) -> None:
        self.loader = ImageLoader(max_web_workers=WORKERS, **self.options)
        await self.loader.__aenter__()
        s = self.series
        ids = await add_series_metadata(self.loader, self.env.dicomweb, s.study_uid, s.series_uid)
        by_sop = {i.split("/instances/")[1].split("/")[0]: i for i in ids}
        self.ids = [by_sop[sop] for sop in s.sop_uids[:count]]
        if self.warm:
            await self.loader.decode_pool.warm()

    async def load(self) -> tuple[dict[str, float], list[Image]]:
        loader = self.loader
        assert loader is not None
        loader.cache.purge()
        main, workers = _self_cpu(), sum(map(_proc_cpu, loader.decode_pool.pids()))
        start = time.perf_counter()
        images = await loader.load_and_cache_images(self.ids)
        seconds = time.perf_counter() - start
        main = _self_cpu() - main
        # Workers started during this load count from zero.
        workers = sum(map(_proc_cpu, loader.decode_pool.pids())) - workers
        return {"seconds": seconds, "cpu": main + workers, "cpu_main": main}, images

    async def close(self) -> None:
        if self.loader is not None:
            await self.loader.aclose()


def _compare(images: list[Image], dump: Path, dtype: str) -> dict[str, Any]:
    theirs = np.fromfile(dump, dtype=np.dtype(dtype)).reshape(len(images), 512, 512)
    ours = np.stack([np.asarray(i.pixel_data) for i in images])
    equal = np.array_equal(ours.astype(np.int32), theirs.astype(np.int32))
    out: dict[str, Any] = {
        "identical": bool(equal),
        "ours_dtype": str(ours.dtype),
        "cornerstone_dtype": dtype,
    }
    if not equal:
        diff = np.abs(ours.astype(np.int64) - theirs.astype(np.int64))
        out.update(differing=int((diff > 0).sum()), max_abs_diff=int(diff.max()))
    return out


_DTYPES = {"Int16Array": "<i2", "Uint16Array": "<u2", "Float32Array": "<f4", "Uint8Array": "u1"}


async def _one_series(
    env: BenchEnv, series: Series, node: NodeScript, workdir: Path, log: Log, *, prime: bool
) -> dict[str, Any]:
    count = min(FRAMES, len(series.sop_uids))
    relabel = _relabel(env, series)
    await node.ask(
        cmd="series",
        name=series.name,
        base=env.dicomweb,
        study=series.study_uid,
        series=series.series_uid,
        sops=list(series.sop_uids[:count]),
        relabel=relabel,
    )
    if prime:  # Node's JIT: the loader's JavaScript runs faster from the second load on
        await node.ask(cmd="load", name=series.name)
    dump = workdir / f"pixels-{series.name}.bin"
    first = await node.ask(cmd="load", name=series.name, dump=str(dump))  # the warm-up load
    if first["images"] != count or first["requests"] != count:
        raise AssertionError(f"Cornerstone: {first}")
    ours = {name: Ours(env, series, options, warm) for name, options, warm in OURS}
    samples: dict[str, list[dict[str, float]]] = {"cornerstone": []}
    samples.update({name: [] for name in ours})
    pixels: dict[str, Any] = {}
    first_load = {"cornerstone": first["seconds"]}
    try:
        for name, side in ours.items():
            await side.open(count)
            warm_up, images = await side.load()  # the warm-up load
            first_load[name] = warm_up["seconds"]
            pixels[name] = _compare(images, dump, _DTYPES[first["type"]])
        dump.unlink()
        for round_ in range(ROUNDS):
            answer = await node.ask(cmd="load", name=series.name)
            if answer["requests"] != count:
                raise AssertionError(f"Cornerstone sent {answer['requests']} requests")
            samples["cornerstone"].append({k: answer[k] for k in ("seconds", "cpu")})
            for name, side in ours.items():
                samples[name].append((await side.load())[0])
            log(
                f"  {series.name} round {round_ + 1}: "
                + ", ".join(f"{k} {count / v[-1]['seconds']:.0f}/s" for k, v in samples.items())
            )
    finally:
        for side in ours.values():
            await side.close()
    fps = {k: statistics.median(count / s["seconds"] for s in v) for k, v in samples.items()}
    cpu = {k: statistics.median(s["cpu"] for s in v) for k, v in samples.items()}
    main = {k: statistics.median(s["cpu_main"] for s in samples[k]) for k in ours}
    return {
        "frames": count,
        "relabelled": relabel,
        # The untimed first load: workers starting (ours, without warm()) or compiling
        # their codec's wasm (Cornerstone's), as a viewer's first series meets it.
        "first_load_fps": {k: count / v for k, v in first_load.items()},
        "cornerstone_output": {k: first[k] for k in ("type", "preScale")},
        "fps": fps,
        "cpu_s": cpu,
        "cpu_ms_per_frame": {k: v / count * 1000 for k, v in cpu.items()},
        # Of ours: the main process alone (HTTP, multipart, dispatch, cache); the rest is
        # the decode workers'.
        "main_cpu_ms_per_frame": {k: v / count * 1000 for k, v in main.items()},
        "ratios": {k: fps[k] / fps["cornerstone"] for k in ours},
        "cpu_ratios": {k: cpu[k] / cpu["cornerstone"] for k in ours},
        "pixels": pixels,
        "samples": samples,
    }


async def run_cornerstone_loader(env: BenchEnv, log: Log) -> dict[str, Any]:
    """frames/s and client CPU of Cornerstone's loader and imageloader, per series."""
    reason = missing_node()
    if reason is not None:
        log(f"  skipped: {reason}")
        return {"skipped": reason}
    workdir = prepare(log)
    out: dict[str, Any] = {
        "workers": WORKERS,
        "rounds": ROUNDS,
        "versions": versions(workdir),
        "series": {},
    }
    async with NodeScript("loader.mjs", str(WORKERS)) as node:
        for name in SERIES:
            out["series"][name] = await _one_series(
                env, env.series[name], node, workdir, log, prime=name == SERIES[0]
            )
    return out
