"""The Dask integration on a real ``distributed.LocalCluster`` (2 worker processes) and Orthanc."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pydicom
import pytest
from distributed import Client, LocalCluster

from imageloader import ImageLoader
from imageloader.dicomweb import image_ids_for_series
from imageloader.geometry import slice_geometry
from imageloader.integrations.dask import load_series_dask, prefetch_many
from imageloader.output import OutputConflictError, PrefetchReport, prefetch, series_key
from tests.integrations.series import SLICES, SyntheticStudy, local_ct_volume, study_on
from tests.integrations.servers import SAMPLES
from tests.processes import worker_children
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    before = set(worker_children())
    with LocalCluster(
        n_workers=2,
        threads_per_worker=2,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=True,
    ) as local:
        workers = set(worker_children()) - before
        assert len(workers) >= 2  # real processes (nannies and their workers)
        yield local
    # Closing the cluster ended every process it started.
    assert set(worker_children()) <= before


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster) as c:
        yield c


@pytest.fixture
def study(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    return study_on(orthanc, tmp_path_factory.getbasetemp() / "synthetic")


def sorted_ct_ids(orthanc: OrthancServer, study: SyntheticStudy) -> list[str]:
    """The CT series' wadors imageIds in scan order, as a client would get them."""

    async def listing() -> list[str]:
        async with ImageLoader(max_web_workers=0) as loader:
            ids = await image_ids_for_series(
                loader, orthanc.dicomweb_url, study.study_uid, study.ct_series_uid
            )
            planes = {i: loader.metadata.get("imagePlaneModule", i) for i in ids}
        return list(slice_geometry(planes).image_ids)

    return asyncio.run(listing())


def test_load_series_dask_equals_the_local_volume(
    client: Client, orthanc: OrthancServer, study: SyntheticStudy
) -> None:
    ids = sorted_ct_ids(orthanc, study)
    volume = load_series_dask(ids, batch_size=5)
    assert volume.shape == (SLICES, 128, 128)
    assert volume.chunks[0] == (5, 5, 2)
    computed = volume.compute()
    assert computed.dtype == np.int16
    assert np.array_equal(computed, local_ct_volume(study))
    # Each worker process loaded through one loader of its own, reused by every task.
    pids = client.run(lambda: os.getpid())
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    loaders = client.run(_loader_count)
    assert set(loaders.values()) <= {0, 1} and sum(loaders.values()) >= 1


def _loader_count() -> int:
    from imageloader.integrations import _dask_worker as integration

    return len(integration._LOADERS)


def _http_requests() -> int:
    from imageloader.integrations import _dask_worker as integration

    return sum(pl.loader.http.requests for pl in integration._LOADERS.values())


def test_prefetch_many_writes_the_output_and_reports_failures(
    client: Client, orthanc: OrthancServer, study: SyntheticStudy, tmp_path: Path
) -> None:
    ids = sorted_ct_ids(orthanc, study)
    broken = ids[0].replace("/frames/1", "/frames/9")  # the instance has one frame
    report = prefetch_many([*ids, broken], client=client, output=tmp_path, batch_size=4)
    assert report.loaded == SLICES
    assert list(report.failures) == [broken]
    assert type(report.errors[broken]).__module__ == "imageloader.errors"
    # The failed frame's series was unknown up front, so it could not hold the series.
    volume = np.load(tmp_path / f"{study.ct_series_uid}.npy")
    assert np.array_equal(volume, local_ct_volume(study))
    manifest = json.loads((tmp_path / f"{study.ct_series_uid}.json").read_text())
    assert manifest["image_ids"] == ids
    assert set(report.image_series.values()) == {study.ct_series_uid}

    again = prefetch_many(ids, client=client, output=tmp_path)
    assert (again.loaded, again.skipped) == (0, SLICES)


def test_cli_prefetch_on_a_dask_cluster(
    client: Client,
    cluster: LocalCluster,
    orthanc: OrthancServer,
    study: SyntheticStudy,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    requests_before = sum(client.run(_http_requests).values())
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "imageloader",
            "prefetch",
            "--dicomweb",
            orthanc.dicomweb_url,
            "--study",
            study.study_uid,
            "--output",
            str(out),
            "--dask-scheduler",
            cluster.scheduler_address,
            "--dask-batch",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{SLICES + 2} loaded, 0 failed" in result.stdout
    # The frames were fetched by the cluster's workers, not by the CLI process.
    assert sum(client.run(_http_requests).values()) - requests_before >= SLICES + 2
    assert np.array_equal(np.load(out / f"{study.ct_series_uid}.npy"), local_ct_volume(study))
    mixed = json.loads((out / f"{study.mixed_series_uid}.json").read_text())
    assert mixed["layout"] == "frames" and len(mixed["files"]) == 2


# -- prefetch_many is the local engine with Dask loading and writing ------------------------
CT = SAMPLES / "CT_small.dcm"
RTDOSE = SAMPLES / "rtdose.dcm"
DOSE = [f"dicomfile:{RTDOSE}?frame={n}" for n in range(1, 16)]
MISSING = f"dicomfile:{SAMPLES}/no-such-file.dcm"


def dose_series() -> str:
    uid = pydicom.dcmread(RTDOSE, stop_before_pixels=True).SeriesInstanceUID
    return series_key({"generalSeriesModule": {"series_instance_uid": uid}})


def local_prefetch(ids: list[str], output: Path | None) -> PrefetchReport:
    async def run() -> PrefetchReport:
        async with ImageLoader(max_web_workers=0) as loader:
            return await prefetch(loader, ids, output=output)

    return asyncio.run(run())


def what_it_says(report: PrefetchReport, output: Path | None) -> dict[str, object]:
    """A report without its timings and paths: what a run did to each image and series."""
    return {
        "counts": (report.total, report.loaded, report.skipped, report.resumed, report.bytes),
        "outcomes": report.outcomes,
        "failures": {key: type(report.errors[key]).__name__ for key in report.failures},
        "image_series": report.image_series,
        "written": sorted((w.series, w.layout, w.frames) for w in report.written),
        "held": report.held,
        "interrupted": report.interrupted,
        "staging left": output is not None and (output / ".staging").exists(),
    }


def test_prefetch_many_reports_what_the_local_engine_reports(
    client: Client, tmp_path: Path
) -> None:
    ids = [f"dicomfile:{CT}", *DOSE, MISSING]
    for output in (None, tmp_path / "local"):
        local = local_prefetch(ids, output)
        remote_output = output and tmp_path / "dask"
        remote = prefetch_many(ids, client=client, output=remote_output, batch_size=4)
        assert what_it_says(remote, remote_output) == what_it_says(local, output)
    # Per-image outcomes (what --report says), and no empty staging area left behind.
    assert remote.outcomes == dict.fromkeys([f"dicomfile:{CT}", *DOSE], "loaded")
    assert type(remote.errors[MISSING]).__name__ == "NotFoundError"
    assert not (tmp_path / "dask" / ".staging").exists()
    for manifest in (tmp_path / "local").glob("*.json"):
        written = json.loads((tmp_path / "dask" / manifest.name).read_text())
        assert written["image_ids"] == json.loads(manifest.read_text())["image_ids"]

    again = prefetch_many(ids, client=client, output=tmp_path / "dask")
    assert what_it_says(again, tmp_path / "dask") == what_it_says(
        local_prefetch(ids, tmp_path / "local"), tmp_path / "local"
    )
    assert again.outcomes == dict.fromkeys([f"dicomfile:{CT}", *DOSE], "skipped")


def test_prefetch_many_holds_a_series_with_a_failed_frame_then_resumes_it(
    client: Client, tmp_path: Path
) -> None:
    series = dose_series()
    broken = f"dicomfile:{RTDOSE}?frame=16"  # the grid has 15 frames
    ids = [*DOSE, broken]
    first = prefetch_many(ids, client=client, output=tmp_path, series_of=dict.fromkeys(ids, series))
    assert first.held == [series] and not first.written and list(first.failures) == [broken]
    assert first.outcomes == dict.fromkeys(DOSE, "loaded")
    assert len(list((tmp_path / ".staging" / series).glob("*.npy"))) == 15

    second = prefetch_many(DOSE, client=client, output=tmp_path)
    assert (second.loaded, second.resumed, second.failures) == (0, 15, {})
    assert second.outcomes == dict.fromkeys(DOSE, "resumed")
    assert [(w.series, w.frames) for w in second.written] == [(series, 15)]
    assert not (tmp_path / ".staging").exists()


def test_a_series_that_cannot_be_written_is_reported_with_its_error(
    client: Client, tmp_path: Path
) -> None:
    series = dose_series()
    # Complete on disk already, with other frames: the writer leaves it as it is.
    (tmp_path / f"{series}.json").write_text(json.dumps({"image_ids": ["dicomfile:other"]}))
    report = prefetch_many(DOSE, client=client, output=tmp_path, batch_size=5)
    key = f"series:{series}"
    assert list(report.failures) == [key] and not report.written
    assert isinstance(report.errors[key], OutputConflictError)
    assert report.failures[key].startswith("OutputConflictError: series ")
    assert report.outcomes == dict.fromkeys(DOSE, "loaded")
    # The frames stay staged for a rerun once the conflict is resolved.
    assert len(list((tmp_path / ".staging" / series).glob("*.npy"))) == 15


class _Stall(BaseHTTPRequestHandler):
    """Answers nothing until the test lets it (then 404)."""

    server: _StallServer

    def do_GET(self) -> None:
        self.server.requested.set()
        self.server.release.wait(30)
        self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _StallServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Stall)
        self.requested = threading.Event()
        self.release = threading.Event()


def test_stop_interrupts_prefetch_many_and_finishes_cleanly(client: Client, tmp_path: Path) -> None:
    server = _StallServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stalled = [f"wadouri:http://127.0.0.1:{server.server_port}/{n}.dcm" for n in range(2)]
    stop, loaded = threading.Event(), threading.Event()

    def progress(report: PrefetchReport) -> None:
        if report.loaded:
            loaded.set()

    def stop_when_stalled() -> None:  # the local file is in; the two others never will be
        if loaded.wait(20) and server.requested.wait(20):
            stop.set()

    threading.Thread(target=stop_when_stalled, daemon=True).start()
    try:
        started = time.monotonic()
        report = prefetch_many(
            [f"dicomfile:{CT}", *stalled],
            client=client,
            output=tmp_path,
            batch_size=1,
            progress=progress,
            stop=stop,
        )
        assert time.monotonic() - started < 20  # not the 30 s the stalled loads would take
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
    assert stop.is_set() and report.interrupted and report.finished is not None
    assert report.outcomes == {f"dicomfile:{CT}": "loaded"} and not report.failures
    # The loaded frame stays staged (an interrupted run keeps what a rerun resumes).
    assert len(list((tmp_path / ".staging").rglob("*.npy"))) == 1


def test_prefetch_many_writes_nifti_equal_to_the_local_engine(
    client: Client, orthanc: OrthancServer, tmp_path: Path
) -> None:
    nibabel = pytest.importorskip("nibabel")
    from tests.support.nifti_reference import make_ct_series

    made = make_ct_series(tmp_path / "ct", "dask-nifti", slices=5)
    for path in made.files[::-1]:
        orthanc.upload(path)

    async def local() -> tuple[list[str], PrefetchReport]:
        async with ImageLoader(max_web_workers=1) as loader:
            ids = await image_ids_for_series(
                loader, orthanc.dicomweb_url, made.study_uid, made.series_uid
            )
            report = await prefetch(loader, ids, output=tmp_path / "local", format="nifti")
        return ids, report

    ids, here = asyncio.run(local())
    there = prefetch_many(
        ids, client=client, output=tmp_path / "dask", format="nifti", include_phi=True
    )
    assert here.ok and there.ok and [w.format for w in there.written] == ["nifti"]
    name = f"{made.series_uid}.nii.gz"
    mine = nibabel.load(tmp_path / "local" / name)
    theirs = nibabel.load(tmp_path / "dask" / name)
    np.testing.assert_array_equal(np.asarray(mine.dataobj), np.asarray(theirs.dataobj))
    np.testing.assert_array_equal(mine.affine, theirs.affine)
    rows = (tmp_path / "dask" / "index.csv").read_text().splitlines()
    assert len(rows) == 2 and name in rows[1] and "PAT-0001" in rows[1]
    assert "patient_id" in rows[0]
    assert "PAT-0001" not in (tmp_path / "local" / "index.csv").read_text()
