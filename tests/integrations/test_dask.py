"""The Dask integration on a real ``distributed.LocalCluster`` (2 worker processes) and Orthanc."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distributed import Client, LocalCluster

from imageloader import ImageLoader
from imageloader.dicomweb import image_ids_for_series
from imageloader.geometry import slice_geometry
from imageloader.integrations.dask import load_series_dask, prefetch_many
from tests.integrations.series import SLICES, SyntheticStudy, local_ct_volume, study_on
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
