"""DICOMweb against the real Orthanc: series metadata, batching, auth, wadouri sharing."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from imageloader import ImageLoader, dicomweb
from imageloader.dicom.wadouri import WadoUriLoader
from imageloader.errors import FetchError
from imageloader.http import HttpOptions
from tests.support.encoders import fresh_uids, quiet
from tests.support.orthanc import OrthancServer, UploadedInstance

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def loader() -> AsyncIterator[ImageLoader]:
    async with ImageLoader(max_web_workers=2) as il:
        yield il


def _upload(
    server: OrthancServer, tmp: Path, name: str, key: str, **changes: object
) -> tuple[Path, UploadedInstance]:
    with quiet():
        ds = pydicom.dcmread(get_testdata_file(name))
        fresh_uids(ds, key)
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        path = tmp / f"{key}.dcm"
        ds.save_as(path)
    return path, server.upload(path)


@pytest.fixture(scope="module")
def ct_series(
    orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str, list[Path]]:
    """Five CT slices in one series, uploaded in shuffled order."""
    tmp = tmp_path_factory.mktemp("series")
    paths = []
    study = series = ""
    for index, number in enumerate([3, 1, 5, 2, 4]):
        with quiet():
            ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        fresh_uids(ds, f"series-slice-{number}")
        if index == 0:
            study, series = ds.StudyInstanceUID, ds.SeriesInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [0.0, 0.0, float(number) * 2.5]
        path = tmp / f"slice-{number}.dcm"
        ds.save_as(path)
        orthanc.upload(path)
        paths.append(path)
    return study, series, paths


async def test_image_ids_for_series_registers_metadata_in_instance_order(
    orthanc: OrthancServer, ct_series: tuple[str, str, list[Path]], loader: ImageLoader
) -> None:
    study, series, paths = ct_series
    ids = await dicomweb.image_ids_for_series(loader, orthanc.dicomweb_url, study, series)
    assert len(ids) == 5
    numbers = [loader.metadata.get("generalImageModule", i).instance_number for i in ids]
    assert numbers == [1, 2, 3, 4, 5]
    requests_before = loader.http.requests
    images = await loader.load_and_cache_images(ids)
    # Metadata was registered up front: only frame requests now, no per-instance metadata.
    assert loader.http.requests - requests_before == 5
    by_number = {int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber): p for p in paths}
    for number, image in zip(numbers, images, strict=True):
        local = await loader.load_image(f"dicomfile:{by_number[number]}")
        np.testing.assert_array_equal(image.pixel_data, local.pixel_data)
    plane = loader.metadata.get("imagePlaneModule", ids[4])
    assert plane.image_position_patient == (0.0, 0.0, 12.5)


async def test_image_ids_for_study(
    orthanc: OrthancServer, ct_series: tuple[str, str, list[Path]], loader: ImageLoader
) -> None:
    study, series, _ = ct_series
    ids = await dicomweb.image_ids_for_study(loader, orthanc.dicomweb_url, study)
    assert len(ids) == 5 and all(f"/series/{series}/" in i for i in ids)


async def test_frames_of_a_multiframe_instance_are_batched(
    orthanc: OrthancServer, loader: ImageLoader, tmp_path: Path
) -> None:
    path, info = _upload(orthanc, tmp_path, "emri_small.dcm", "batched-emri")
    base = f"{orthanc.dicomweb_url}/studies/{info.study_uid}/series/{info.series_uid}"
    ids = [f"wadors:{base}/instances/{info.sop_uid}/frames/{n}" for n in range(1, 11)]
    before = loader.http.requests
    images = await loader.load_and_cache_images(ids)
    used = loader.http.requests - before
    assert used <= 4, used  # metadata + a few batches, not 1 + 10
    for n, image in enumerate(images, start=1):
        local = await loader.load_image(f"dicomfile:{path}?frame={n}")
        np.testing.assert_array_equal(image.pixel_data, local.pixel_data)


async def test_basic_auth_through_the_request_hook_and_without_it(
    orthanc_auth: OrthancServer, tmp_path: Path
) -> None:
    path, info = _upload(orthanc_auth, tmp_path, "CT_small.dcm", "auth-ct")
    image_id = (
        f"wadors:{orthanc_auth.dicomweb_url}/studies/{info.study_uid}/series/"
        f"{info.series_uid}/instances/{info.sop_uid}/frames/1"
    )
    user, password = orthanc_auth.auth or ("", "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()

    async def hook(url: str, image_id: str | None) -> dict[str, str]:
        return {"Authorization": f"Basic {token}"}

    async with ImageLoader(max_web_workers=0, http=HttpOptions(request_hook=hook)) as loader:
        image = await loader.load_image(image_id)
        local = await loader.load_image(f"dicomfile:{path}")
        np.testing.assert_array_equal(image.pixel_data, local.pixel_data)
    async with ImageLoader(
        max_web_workers=0, http=HttpOptions(auth={orthanc_auth.base_url: (user, password)})
    ) as loader:
        assert (await loader.load_image(image_id)).rows == 128
    async with ImageLoader(max_web_workers=0) as loader:
        with pytest.raises(FetchError) as caught:
            await loader.load_image(image_id)
        assert caught.value.status == 401 and caught.value.image_id == image_id
        assert password not in str(caught.value)
        assert loader.in_flight == 0 and len(loader.cache) == 0


async def test_wadouri_downloads_an_object_once_for_all_its_frames(
    orthanc: OrthancServer, loader: ImageLoader, tmp_path: Path
) -> None:
    _, info = _upload(orthanc, tmp_path, "emri_small.dcm", "wadouri-emri")
    url = (
        f"{orthanc.wadouri_url}?requestType=WADO&studyUID={info.study_uid}"
        f"&seriesUID={info.series_uid}&objectUID={info.sop_uid}&contentType=application%2Fdicom"
    )
    ids = [f"wadouri:{url}&frame={n}" for n in range(1, 11)]
    before = loader.http.requests
    await loader.load_and_cache_images(ids)
    assert loader.http.requests - before == 1
    wadouri = loader.builtin_loader("wadouri")
    assert isinstance(wadouri, WadoUriLoader)
    objects = wadouri.objects
    assert len(objects) == 1
    for image_id in ids:  # the object goes when its last cached frame does
        loader.cache.remove(image_id)
    assert len(objects) == 0
    # The alias scheme works the same way.
    assert (await loader.load_image(f"dicomweb:{url}&frame=2")).rows == 64


async def test_a_volume_from_wadors_equals_the_local_files(
    orthanc: OrthancServer, ct_series: tuple[str, str, list[Path]], loader: ImageLoader
) -> None:
    study, series, paths = ct_series
    ids = await dicomweb.image_ids_for_series(loader, orthanc.dicomweb_url, study, series)
    volume = await loader.create_and_cache_volume("orthanc-ct", ids)
    await volume.loaded()
    assert volume.dimensions == (128, 128, 5) and volume.spacing[2] == 2.5
    # Scan order is by position (z = 2.5 * InstanceNumber): the files in number order.
    by_number = sorted(
        paths, key=lambda p: pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber
    )
    stack = np.stack([(await loader.load_image(f"dicomfile:{p}")).pixel_data for p in by_number])
    np.testing.assert_array_equal(volume.data, stack)
