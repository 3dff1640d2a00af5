"""``nifti:`` end to end: nibabel's sample files and files it writes, from disk and HTTP.

The reference is nibabel's reading of the same file; over HTTP, a local server
counts the bytes it really sent, to show that reading a header stops the download
early and that a file is downloaded once for all its slices.
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from imageloader import AccessPolicy, ImageLoader, Limits
from imageloader.decode.pixels import dtype_for_range
from imageloader.errors import (
    AccessDeniedError,
    DecodeError,
    ImageTooLargeError,
    InvalidImageIdError,
    NotFoundError,
)
from imageloader.http import HttpOptions
from imageloader.metadata import GeneralSeriesModule, ImagePixelModule, VoiLutModule
from imageloader.nifti import (
    create_nifti_image_ids,
    load_nifti_metadata,
    nifti_image_id,
    read_nifti_header,
)
from imageloader.nifti.loader import NiftiLoader
from imageloader.nifti.volume import NiftiVolume
from imageloader.objectcache import ObjectCache
from tests.nifti._volumes import SAMPLES, nibabel_frames, nifti_bytes, sample, write
from tests.web.fileserver import FileServer, file_server

pytestmark = pytest.mark.timeout(60)

FAST = HttpOptions(retries=0, read_timeout=5.0)
RNG = np.random.default_rng(11)


@pytest.fixture
async def loader() -> AsyncIterator[ImageLoader]:
    async with ImageLoader(max_web_workers=0, http=FAST) as il:
        yield il


@pytest.fixture
async def server() -> AsyncIterator[FileServer]:
    async with file_server() as state:
        yield state


def scaled(stored: np.ndarray, path: Path) -> np.ndarray:
    """The expected pixels: scl_slope/scl_inter applied in float64 (nibabel's values)."""
    slope, inter = nib.load(path).dataobj.slope, nib.load(path).dataobj.inter
    if slope == 1 and inter == 0:
        return stored
    return stored.astype(np.float64) * slope + inter


def volumes(loader: ImageLoader) -> ObjectCache[NiftiVolume]:
    nifti = loader.builtin_loader("nifti")
    assert isinstance(nifti, NiftiLoader)
    return nifti.volumes


# -- local files ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_nibabel_samples_load_as_nibabel_reads_them(loader: ImageLoader, name: str) -> None:
    path = sample(name)
    ids = await create_nifti_image_ids(loader, str(path))
    shape = SAMPLES[name]
    assert ids == [nifti_image_id(str(path), k) for k in range(shape[2])]
    images = await loader.load_and_cache_images(ids)
    frames = nibabel_frames(path)
    for k, image in enumerate(images):
        want = scaled(frames[:, :, k].T, path)
        assert image.pixel_data.shape == (shape[1], shape[0])
        np.testing.assert_allclose(image.pixel_data, want, rtol=1e-6)
        assert image.min_pixel_value == pytest.approx(float(np.nanmin(image.pixel_data)))
        assert image.max_pixel_value == pytest.approx(float(np.nanmax(image.pixel_data)))
        assert image.image_id == ids[k] and not image.color
        assert image.pixel_data.flags.writeable and image.pixel_data.flags.c_contiguous
    # One file, parsed once, for every slice.
    assert volumes(loader).loads == 1


async def test_second_timepoint_of_a_4d_file(loader: ImageLoader) -> None:
    path = sample("example4d.nii.gz")
    ids = await create_nifti_image_ids(loader, str(path), timepoint=1, modality="MR")
    assert ids[0].endswith("?frame=24") and len(ids) == 24
    image = await loader.load_image(ids[5])
    np.testing.assert_array_equal(image.pixel_data, nib.load(path).get_fdata()[:, :, 5, 1].T)
    series = loader.metadata.get("generalSeriesModule", ids[5])
    assert isinstance(series, GeneralSeriesModule) and series.modality == "MR"
    # Both timepoints of one slice share its place.
    first = loader.metadata.get("imagePlaneModule", ids[5])
    other = await create_nifti_image_ids(loader, str(path))
    assert loader.metadata.get("imagePlaneModule", other[5]) == first
    with pytest.raises(InvalidImageIdError, match="timepoint 2"):
        await create_nifti_image_ids(loader, str(path), timepoint=2)


@pytest.mark.parametrize(
    ("dtype", "slope", "inter", "want"),
    [
        ("uint8", None, None, "uint8"),
        ("uint8", 2.0, -10.0, "int16"),  # integers, negative: the DICOM container rule
        ("int16", 1.0, 1000.0, None),  # by the scaled range
        ("uint8", 0.5, 0.0, "float32"),  # a fractional slope
        ("float32", 2.0, 1.0, "float32"),
        ("float64", None, None, "float64"),
    ],
)
async def test_scaling_uses_cornerstones_container_rules(
    loader: ImageLoader,
    tmp_path: Path,
    dtype: str,
    slope: float | None,
    inter: float | None,
    want: str | None,
) -> None:
    info = np.iinfo(dtype) if dtype.startswith(("u", "i")) else None
    hi = 250 if info is None else min(info.max, 3000)
    lo = 0 if info is None else max(info.min, -3000)
    data = RNG.integers(lo, hi, size=(6, 5, 2)).astype(dtype)
    path = write(tmp_path / "s.nii", nifti_bytes(data, slope=slope, inter=inter))
    ids = await create_nifti_image_ids(loader, str(path))
    image = await loader.load_image(ids[1])
    stored = data[:, :, 1].T
    expected = stored if slope is None else stored.astype(np.float64) * slope + inter
    if want is None:
        want = dtype_for_range(expected.min(), expected.max()).name
    assert image.pixel_data.dtype == want
    np.testing.assert_allclose(image.pixel_data, expected, rtol=1e-6)
    assert image.prescale.scaled is (slope is not None)
    assert (image.slope, image.intercept) == (slope or 1.0, inter or 0.0)
    raw = await loader.load_image(ids[1], prescale=False)
    np.testing.assert_array_equal(raw.pixel_data, stored)
    assert not raw.prescale.scaled


async def test_metadata_modules_and_the_volume_window(loader: ImageLoader, tmp_path: Path) -> None:
    data = np.stack([np.full((4, 3), v, np.int16) for v in (-50, 10, 300)], axis=2)
    path = write(tmp_path / "w.nii.gz", nifti_bytes(data, slope=2.0, inter=0.0, gz=True))
    ids = await create_nifti_image_ids(loader, str(path))
    pixel = loader.metadata.get("imagePixelModule", ids[0])
    assert pixel == ImagePixelModule(
        samples_per_pixel=1,
        photometric_interpretation="MONOCHROME2",
        rows=3,
        columns=4,
        bits_allocated=16,
        bits_stored=16,
        high_bit=15,
        pixel_representation=1,
    )
    modality = loader.metadata.get("modalityLutModule", ids[0])
    assert (modality.rescale_slope, modality.rescale_intercept) == (2.0, 0.0)
    assert loader.metadata.get("voiLutModule", ids[0]) is None  # no cal_min/cal_max
    middle = await loader.load_image(ids[1])
    # One window for the whole file, over its scaled range (-100 .. 600).
    assert (middle.window_width, middle.window_center) == (701.0, 250.5)
    assert loader.metadata.get("voiLutModule", ids[1]) == VoiLutModule((250.5,), (701.0,))
    assert (middle.min_pixel_value, middle.max_pixel_value) == (20, 20)


async def test_the_volume_is_released_with_its_last_cached_slice(
    loader: ImageLoader, tmp_path: Path
) -> None:
    path = write(tmp_path / "r.nii", nifti_bytes(np.zeros((8, 8, 4), np.int16)))
    ids = await create_nifti_image_ids(loader, str(path))
    await loader.load_and_cache_images(ids)
    held = volumes(loader)
    assert str(path) in held
    for image_id in ids[:-1]:
        loader.cache.remove(image_id)
    assert str(path) in held
    loader.cache.remove(ids[-1])
    assert str(path) not in held
    await loader.load_image(ids[0])
    assert held.loads == 2


async def test_paths_outside_the_allowed_roots_are_refused(tmp_path: Path) -> None:
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    body = nifti_bytes(np.zeros((2, 2, 2), np.uint8))
    write(inside / "a.nii", body)
    link = inside / "escape.nii"
    link.symlink_to(write(outside / "b.nii", body))
    async with ImageLoader(max_web_workers=0, access=AccessPolicy(roots=[inside])) as il:
        assert len(await create_nifti_image_ids(il, str(inside / "a.nii"))) == 2
        with pytest.raises(AccessDeniedError):
            await create_nifti_image_ids(il, str(link))
        with pytest.raises(AccessDeniedError) as info:
            await il.load_image(nifti_image_id(str(link), 0))
        assert info.value.image_id == nifti_image_id(str(link), 0)


async def test_failures_are_typed_and_name_the_image(loader: ImageLoader, tmp_path: Path) -> None:
    text = write(tmp_path / "notes.nii", b"these are not voxels\n" * 40)
    with pytest.raises(DecodeError) as info:
        await create_nifti_image_ids(loader, str(text))
    assert info.value.image_id == f"nifti:{text}"
    with pytest.raises(DecodeError) as info:
        await loader.load_image(nifti_image_id(str(text), 0))
    assert info.value.image_id == nifti_image_id(str(text), 0)

    whole = gzip.compress(nifti_bytes(RNG.integers(0, 999, (30, 30, 30), dtype=np.int16)))
    cut = write(tmp_path / "cut.nii.gz", whole[: len(whole) // 2])
    ids = await create_nifti_image_ids(loader, str(cut))  # the header is intact
    with pytest.raises(DecodeError, match="truncated") as info:
        await loader.load_image(ids[3])
    assert info.value.image_id == ids[3]

    good = write(tmp_path / "good.nii", nifti_bytes(np.zeros((3, 3, 3), np.uint8)))
    with pytest.raises(
        NotFoundError, match=r"frame 3 \(0-based\) of 3 does not exist \(frames are 0\.\.2\)"
    ) as bad_frame:
        await loader.load_image(nifti_image_id(str(good), 3))
    assert bad_frame.value.image_id == nifti_image_id(str(good), 3)
    with pytest.raises(NotFoundError):
        await loader.load_image(nifti_image_id(str(tmp_path / "missing.nii"), 0))


async def test_one_failed_read_fails_each_waiting_slice_by_its_own_id(
    loader: ImageLoader, tmp_path: Path
) -> None:
    body = nifti_bytes(np.zeros((4, 4, 3), np.uint8))
    path = write(tmp_path / "short.nii", body[:-5])
    ids = [nifti_image_id(str(path), k) for k in range(3)]
    results = await loader.load_and_cache_images(ids, return_exceptions=True)
    assert [type(r) for r in results] == [DecodeError] * 3
    assert [r.image_id for r in results] == ids  # type: ignore[union-attr]


async def test_limits_refuse_before_reading_the_data(tmp_path: Path) -> None:
    path = write(tmp_path / "big.nii.gz", nifti_bytes(np.zeros((20, 20, 10), np.int16), gz=True))
    limits = Limits(max_volume_bytes=7999)
    async with ImageLoader(max_web_workers=0, limits=limits) as il:
        with pytest.raises(ImageTooLargeError):
            await create_nifti_image_ids(il, str(path))
        with pytest.raises(ImageTooLargeError) as info:
            await il.load_image(nifti_image_id(str(path), 0))
        assert info.value.image_id == nifti_image_id(str(path), 0)
    noisy = nifti_bytes(RNG.integers(0, 999, (20, 20, 10), dtype=np.int16), gz=True)
    path = write(tmp_path / "noisy.nii.gz", noisy)
    async with ImageLoader(max_web_workers=0, limits=Limits(max_response_bytes=4000)) as il:
        with pytest.raises(ImageTooLargeError, match="file of"):
            await il.load_image(nifti_image_id(str(path), 0))


# -- HTTP ---------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
async def test_reading_the_header_stops_the_download(
    loader: ImageLoader, server: FileServer, gz: bool
) -> None:
    data = RNG.integers(-3000, 3000, size=(128, 128, 64), dtype=np.int16)
    body = nifti_bytes(data, gz=gz)
    server.pause = 0.005  # 16 KiB every 5 ms: the whole body would take over half a second
    url = server.add("big.nii.gz" if gz else "big.nii", body)
    info, read = await read_nifti_header(loader, url)
    assert info.shape == (128, 128, 64)
    await asyncio.sleep(0.1)  # let the server notice the closed connection
    name = url.rsplit("/", 1)[1]
    assert server.completed[name] == 0
    assert read <= 64 << 10 and server.bytes_sent[name] < len(body) // 4, (
        read,
        server.bytes_sent[name],
        len(body),
    )


async def test_slices_over_http_download_the_file_once(
    loader: ImageLoader, server: FileServer
) -> None:
    path = sample("example4d.nii.gz")
    url = server.add("example4d.nii.gz", await asyncio.to_thread(path.read_bytes))
    ids = await create_nifti_image_ids(loader, url)
    assert ids[7] == f"nifti:{url}?frame=7"
    images = await loader.load_and_cache_images(ids)
    # The header, then the whole file once for 24 slices loading together.
    assert server.hits["example4d.nii.gz"] == 2
    frames = nibabel_frames(path)
    for k, image in enumerate(images):
        np.testing.assert_array_equal(image.pixel_data, frames[:, :, k].T)
    # Same metadata as from disk.
    local = await create_nifti_image_ids(loader, str(path))
    assert loader.metadata.get("imagePlaneModule", ids[3]) == loader.metadata.get(
        "imagePlaneModule", local[3]
    )


async def test_a_url_with_its_own_query_and_http_errors(
    loader: ImageLoader, server: FileServer, tmp_path: Path
) -> None:
    url = server.add("q.nii", nifti_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4)))
    ids = await create_nifti_image_ids(loader, f"{url}?token=abc")
    assert ids[2] == f"nifti:{url}?token=abc?frame=2"
    image = await loader.load_image(ids[2])
    np.testing.assert_array_equal(image.pixel_data, np.arange(24).reshape(2, 3, 4)[:, :, 2].T)

    missing = server.url("missing.nii.gz")
    with pytest.raises(NotFoundError) as info:
        await create_nifti_image_ids(loader, missing)
    assert info.value.image_id == f"nifti:{missing}"
    with pytest.raises(NotFoundError) as info:
        await loader.load_image(nifti_image_id(missing, 0))
    assert info.value.image_id == nifti_image_id(missing, 0)

    html = server.add("page.nii", b"<html>" + b" " * 600 + b"</html>", "text/html")
    with pytest.raises(DecodeError, match="not a NIfTI"):
        await create_nifti_image_ids(loader, html)


async def test_a_local_copy_and_the_served_file_agree(
    loader: ImageLoader, server: FileServer, tmp_path: Path
) -> None:
    copy = Path(await asyncio.to_thread(shutil.copy, sample("anatomical.nii"), tmp_path))
    url = server.add("anatomical.nii", await asyncio.to_thread(copy.read_bytes))
    local, remote = await asyncio.gather(
        create_nifti_image_ids(loader, str(copy)), create_nifti_image_ids(loader, url)
    )
    a, b = await asyncio.gather(loader.load_image(local[12]), loader.load_image(remote[12]))
    np.testing.assert_array_equal(a.pixel_data, b.pixel_data)
    assert a.pixel_data.dtype == b.pixel_data.dtype


async def test_concatenated_gzip_members_are_one_file(loader: ImageLoader, tmp_path: Path) -> None:
    data = RNG.integers(0, 999, size=(9, 8, 7), dtype=np.int16)
    raw = nifti_bytes(data)
    middle = len(raw) // 3
    body = gzip.compress(raw[:middle]) + gzip.compress(raw[middle:])  # as `cat a.gz b.gz`
    path = write(tmp_path / "members.nii.gz", body)
    ids = await create_nifti_image_ids(loader, str(path))
    image = await loader.load_image(ids[6])
    np.testing.assert_array_equal(image.pixel_data, data[:, :, 6].T)


async def test_cancelling_the_only_slice_stops_the_download(
    loader: ImageLoader, server: FileServer
) -> None:
    data = RNG.integers(0, 999, size=(128, 128, 64), dtype=np.int16)
    url = server.add("slow.nii", nifti_bytes(data))
    ids = await create_nifti_image_ids(loader, url)
    server.pause = 0.01  # about 1.3 s for the whole file
    header_only = server.bytes_sent["slow.nii"]
    completed = server.completed["slow.nii"]
    task = asyncio.ensure_future(loader.load_image(ids[0]))
    await asyncio.wait_for(server.sent("slow.nii", header_only + 100_000), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert server.completed["slow.nii"] == completed  # the download did not finish
    assert len(volumes(loader)) == 0 and volumes(loader).loading == 0
    server.pause = 0.0
    image = await loader.load_image(ids[40])  # a later load starts afresh
    np.testing.assert_array_equal(image.pixel_data, data[:, :, 40].T)


async def test_metadata_loader_reads_one_header_for_many_slices(
    loader: ImageLoader, server: FileServer
) -> None:
    url = server.add("m.nii.gz", await asyncio.to_thread(sample("example4d.nii.gz").read_bytes))
    ids = [nifti_image_id(url, f) for f in range(0, 48, 3)]  # made by hand: no metadata yet
    if loader.registry.resolve_metadata(ids[0]) is None:  # until builtins register it
        loader.registry.register_metadata("nifti", load_nifti_metadata)
    loader.metadata.store.add(ids[0], {"generalSeriesModule": GeneralSeriesModule(modality="MR")})
    await loader.load_metadata(ids)
    assert server.hits["m.nii.gz"] == 1
    for image_id in ids:
        assert isinstance(loader.metadata.get("imagePixelModule", image_id), ImagePixelModule)
    assert loader.metadata.get("generalSeriesModule", ids[0]).modality == "MR"  # kept
    with pytest.raises(NotFoundError, match=r"frame 48 \(0-based\) of 48 does not exist") as info:
        await loader.load_metadata([nifti_image_id(url, 48)])
    assert info.value.image_id == nifti_image_id(url, 48)


async def test_a_volume_of_nifti_slices_is_the_nifti_volume(
    loader: ImageLoader, server: FileServer
) -> None:
    path = sample("anatomical.nii")
    url = server.add("anatomical.nii", await asyncio.to_thread(path.read_bytes))
    ids = await create_nifti_image_ids(loader, url)
    volume = await loader.create_and_cache_volume("nifti-volume", ids)
    await asyncio.wait_for(volume.loaded(), 30)
    assert volume.dimensions == (33, 41, 25)
    expected = nibabel_frames(path)  # (i, j, k)
    # The volume is sorted along row × column; compare it slice by slice by position.
    for z, image_id in enumerate(volume.image_ids):
        k = ids.index(image_id)
        np.testing.assert_array_equal(volume.data[z], expected[:, :, k].T)
    # Its grid is nibabel's affine in LPS: the first voxel, and one step along each axis.
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ nib.load(path).affine
    first_k = ids.index(volume.image_ids[0])
    np.testing.assert_allclose(volume.origin, (affine @ (0, 0, first_k, 1))[:3])
    np.testing.assert_allclose(volume.spacing, (2.0, 2.0, 2.0))
