"""The two pipelines under test: imageloader, and what a Python user has today.

- imageloader: ``await loader.load_and_cache_images(ids)`` of a series' wadors
  imageIds, on a loader whose series metadata is registered and whose decode
  workers are started (the cold start is measured on its own); the cache is purged
  before each run.
- the peer: dicomweb-client ``retrieve_instance_frames`` (one frame per call, as
  stored: ``media_types=(("application/octet-stream", "*"),)`` — its default asks
  for a form Orthanc refuses with HTTP 400), then pydicom's ``pixel_array`` and
  ``apply_modality_lut``: the same HU output imageloader's prescale gives.
  Sequential, as the library is synchronous. Series metadata is fetched before
  timing, for both.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import requests

from imageloader import ImageLoader
from imageloader.dicomweb import add_series_metadata
from imageloader.http import HttpOptions

from .environment import BenchEnv, Series

__all__ = ["IDENTITY", "Peer", "close_loader", "open_loader", "timed_load"]

EXPLICIT_LE = "1.2.840.10008.1.2.1"
#: Ask the server not to gzip (Orthanc gzips every response by default).
IDENTITY = HttpOptions(headers={"Accept-Encoding": "identity"})


async def open_loader(
    env: BenchEnv, series: Series | None = None, *, warm: bool = True, **options: Any
) -> tuple[ImageLoader, list[str]]:
    """An entered ImageLoader (workers started when ``warm``) and the series' imageIds."""
    loader = ImageLoader(
        max_cache_size_bytes=options.pop("max_cache_size_bytes", 4 << 30), **options
    )
    await loader.__aenter__()
    try:
        ids: list[str] = []
        if series is not None:
            ids = await add_series_metadata(
                loader, env.dicomweb, series.study_uid, series.series_uid
            )
        if warm:
            await loader.decode_pool.warm()
    except BaseException:
        await close_loader(loader)
        raise
    return loader, ids


async def close_loader(loader: ImageLoader) -> None:
    """Close the loader (its workers stop; frames in flight are dropped)."""
    await loader.aclose()


async def timed_load(loader: ImageLoader, ids: list[str]) -> float:
    """Seconds to load and cache every image (cache purged first); checks the result."""
    loader.cache.purge()
    start = time.perf_counter()
    images = await loader.load_and_cache_images(ids)
    seconds = time.perf_counter() - start
    first = images[0].pixel_data
    if len(images) != len(ids) or first.shape != (512, 512):
        raise AssertionError(f"unexpected result: {len(images)} images, {first.shape}")
    return seconds


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from ``/proc`` (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


async def timed_load_cpu(
    loader: ImageLoader, ids: list[str], server_pid: int | None
) -> tuple[float, dict[str, float]]:
    """:func:`timed_load`, and each process's CPU ms per frame (main, workers, server).

    ``cores`` is the CPU of all of them over the wall time: how much of the machine
    the pipeline kept busy.
    """
    pids = loader.decode_pool.pids()
    main0 = time.process_time()
    workers0 = [process_cpu(p) for p in pids]
    server0 = process_cpu(server_pid) if server_pid else 0.0
    seconds = await timed_load(loader, ids)
    main = time.process_time() - main0
    workers = sum(process_cpu(p) for p in pids) - sum(workers0)
    server = (process_cpu(server_pid) - server0) if server_pid else 0.0
    n = len(ids)
    cpu = {
        "main": main / n * 1000.0,
        "workers": workers / n * 1000.0,
        "server": server / n * 1000.0,
        "cores": (main + workers + server) / seconds,
    }
    return seconds, cpu


class Peer:
    """dicomweb-client + pydicom, one frame at a time."""

    def __init__(self, env: BenchEnv, series: Series, *, identity: bool = False) -> None:
        from dicomweb_client import DICOMwebClient
        from pydicom import Dataset
        from pydicom.dataset import FileMetaDataset

        self.series = series
        headers = {"Accept-Encoding": "identity"} if identity else None
        self.client = DICOMwebClient(url=env.dicomweb, headers=headers)
        self.media_types: tuple[tuple[str, str], ...] = (("application/octet-stream", "*"),)
        metadata = self.client.retrieve_series_metadata(series.study_uid, series.series_uid)
        by_sop = {}
        for item in metadata:
            item.pop("7FE00010", None)  # a BulkDataURI; set per frame below
            ds = Dataset.from_json(item)
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = series.transfer_syntax_uid
            by_sop[str(ds.SOPInstanceUID)] = ds
        self.datasets = [by_sop[sop] for sop in series.sop_uids]
        self.encapsulated = ds.file_meta.TransferSyntaxUID.is_encapsulated
        # Split timings of the last run: HTTP, codec, modality LUT.
        self.split = {"http": 0.0, "decode": 0.0, "lut": 0.0}
        try:
            self.fetch(0)
        except requests.HTTPError:
            # Orthanc 1.10 answers 500 for HTJ2K "as stored", and sends the codestream
            # when asked for explicit VR LE instead: the workaround a user would find.
            self.media_types = (("application/octet-stream", EXPLICIT_LE),)
            self.fetch(0)

    def fetch(self, index: int) -> bytes:
        s = self.series
        [frame] = self.client.retrieve_instance_frames(
            s.study_uid,
            s.series_uid,
            s.sop_uids[index],
            frame_numbers=[1],
            media_types=self.media_types,
        )
        return bytes(frame)  # a bytearray; pydicom takes bytes

    def decode(self, index: int, frame: bytes) -> tuple[np.ndarray, float]:
        from pydicom.encaps import encapsulate
        from pydicom.pixels import apply_modality_lut

        ds = self.datasets[index]
        if self.encapsulated:
            ds.add_new(0x7FE00010, "OB", encapsulate([frame]))
            ds["PixelData"].is_undefined_length = True
        else:
            ds.add_new(0x7FE00010, "OW", frame)
        stored = ds.pixel_array
        start = time.perf_counter()
        return apply_modality_lut(stored, ds), time.perf_counter() - start

    def run(self, count: int | None = None) -> float:
        """Seconds to fetch and decode every frame (or the first ``count``)."""
        split = dict.fromkeys(self.split, 0.0)
        start = time.perf_counter()
        for index in range(count or len(self.datasets)):
            t0 = time.perf_counter()
            frame = self.fetch(index)
            t1 = time.perf_counter()
            pixels, lut = self.decode(index, frame)
            t2 = time.perf_counter()
            split["http"] += t1 - t0
            split["decode"] += t2 - t1 - lut
            split["lut"] += lut
            if pixels.shape != (512, 512):
                raise AssertionError(f"peer decoded {pixels.shape}")
        self.split = split
        return time.perf_counter() - start

    def close(self) -> None:
        self.client._session.close()
