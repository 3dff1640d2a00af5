"""What every measurement runs against: the profile, the data, and a fresh Orthanc holding it.

:func:`bench_environment` makes (or reuses) the data, starts a private Orthanc
(``tests.support.orthanc.OrthancServer``, its own temp storage), uploads every
series and the multi-frame instance in parallel, and on leaving stops the server
and deletes its storage, whatever happened in between.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.orthanc import OrthancServer, missing_orthanc

from .data import SeriesFiles, make_data

__all__ = ["ACCEPT", "BenchEnv", "Profile", "Series", "bench_environment", "cores"]

#: What ``wadors:`` asks for first (imageloader.dicom.wadors.DEFAULT_ACCEPT[0]).
ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def cores() -> int:
    """The cores this process may use (what imageloader's default worker count is)."""
    return max(1, len(os.sched_getaffinity(0)))


@dataclass(frozen=True, slots=True)
class Profile:
    """How much to measure: ``quick`` is a smoke run, ``full`` the real one."""

    name: str
    instances: int  # slices per series
    multiframe_frames: int
    rounds: int  # interleaved repeats of each side-by-side comparison
    peer_frames: int  # frames the sequential peer loads per round (its rate is per frame)
    gzip_frames: int  # frames of the secondary gzip-transport runs (wadouri, fetch ceiling)
    prefetch_images: int  # the PREFETCH running under the INTERACTION loads
    interaction_loads: int
    decode_frames: int  # frames per decode-only measurement
    cold_repeats: int
    core_hits: int
    core_loads: int

    @classmethod
    def get(cls, name: str) -> Profile:
        return PROFILES[name]


PROFILES = {
    "quick": Profile("quick", 40, 30, 1, 40, 40, 160, 12, 30, 1, 20_000, 2_000),
    "full": Profile("full", 300, 240, 2, 120, 100, 1000, 40, 60, 3, 200_000, 20_000),
}


@dataclass(frozen=True, slots=True)
class Series:
    """One uploaded series: its syntax, UIDs and files."""

    name: str
    transfer_syntax_uid: str
    encoder: str
    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...]
    paths: tuple[Path, ...]
    bytes_on_disk: int

    def instance_url(self, base: str, index: int) -> str:
        return (
            f"{base}/studies/{self.study_uid}/series/{self.series_uid}"
            f"/instances/{self.sop_uids[index]}"
        )

    def frame_urls(self, base: str) -> list[str]:
        return [f"{self.instance_url(base, i)}/frames/1" for i in range(len(self.sop_uids))]

    def wadouri_ids(self, wado: str) -> list[str]:
        return [
            f"wadouri:{wado}?requestType=WADO&studyUID={self.study_uid}"
            f"&seriesUID={self.series_uid}&objectUID={sop}&contentType=application%2Fdicom"
            for sop in self.sop_uids
        ]


@dataclass
class BenchEnv:
    """The profile, the server and what it holds."""

    profile: Profile
    server: OrthancServer
    series: dict[str, Series]
    multiframe: Series
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def dicomweb(self) -> str:
        return self.server.dicomweb_url

    @property
    def wado(self) -> str:
        return self.server.wadouri_url


def _series(files: SeriesFiles) -> Series:
    return Series(
        files.name,
        files.transfer_syntax_uid,
        files.encoder,
        files.study_uid,
        files.series_uid,
        tuple(files.sop_uids),
        files.paths,
        files.bytes_on_disk,
    )


def _multiframe(path: Path) -> Series:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return Series(
        "multiframe",
        str(ds.file_meta.TransferSyntaxUID),
        "pydicom",
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        (str(ds.SOPInstanceUID),),
        (path,),
        path.stat().st_size,
    )


def _upload(server: OrthancServer, path: Path) -> None:
    answer = server.request(
        "POST", "/instances", body=path.read_bytes(), headers={"Content-Type": "application/dicom"}
    )
    if answer.status != 200:
        raise RuntimeError(f"Orthanc refused {path}: HTTP {answer.status} {answer.body[:200]!r}")


@contextmanager
def bench_environment(profile: Profile, log: Callable[[str], None] = print) -> Iterator[BenchEnv]:
    """Data made, Orthanc started and loaded; the server is stopped and wiped on exit."""
    reason = missing_orthanc()
    if reason is not None:
        raise RuntimeError(f"Orthanc is needed: {reason}")
    files, multiframe_path, facts = make_data(profile.instances, profile.multiframe_frames, log=log)
    # A 120 MB multi-frame instance must fit Orthanc's parsed-file cache (128 MB by
    # default), or every per-frame request re-reads it: give it room for one.
    server = OrthancServer(config={"DicomCacheSize": 256}, start_timeout=30)
    try:
        server.start()
        started = time.perf_counter()
        paths = [p for f in files for p in f.paths] + [multiframe_path]
        # Orthanc stores on several HTTP threads: upload in parallel.
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda p: _upload(server, p), paths))
        facts["upload_seconds"] = time.perf_counter() - started
        facts["uploaded_instances"] = len(paths)
        log(f"uploaded {len(paths)} instances in {facts['upload_seconds']:.1f} s")
        series = {f.name: _series(f) for f in files}
        yield BenchEnv(profile, server, series, _multiframe(multiframe_path), facts)
    finally:
        server.close()
