"""``dicomfile:`` end to end: conformance through the loader, real encoders, errors, metadata.

The reference is pydicom's under the pixel contract (``tests.decode.dicom_frames``),
computed independently of imageloader's decoders; frames come from the file through
the loader's own parsing, parameters and decode pool.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from imageloader import ImageLoader
from imageloader.decode.params import DecodeOptions
from imageloader.dicom.dicomfile import DicomFileLoader
from imageloader.errors import (
    AccessDeniedError,
    DecodeError,
    ImageLoaderError,
    InvalidImageIdError,
    MetadataError,
    NotFoundError,
)
from imageloader.metadata import ImagePixelModule, ImagePlaneModule, MultiframeModule
from imageloader.security import AccessPolicy
from tests.corpus import CORNERSTONE
from tests.decode.dicom_frames import (
    expected_frame,
    frames,
    params_from_dataset,
    read,
    sample_frames,
)
from tests.decode.test_corpus import CORNERSTONE_FILES, PYDICOM_FILES
from tests.decode.test_corpus import _pydicom_can_decode as pydicom_can_decode
from tests.support.encoders import make_variants, missing_tools

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def loader() -> AsyncIterator[ImageLoader]:
    async with ImageLoader(max_web_workers=2) as il:
        yield il


async def _check_file(loader: ImageLoader, path: Path) -> int:
    ds = read(path)
    params = params_from_dataset(ds)
    colour = params.samples_per_pixel > 1 or params.photometric_interpretation == "PALETTE COLOR"
    all_frames = list(frames(ds))
    checked = 0
    for index in sample_frames(ds):
        image_id = f"dicomfile:{path}?frame={index + 1}"
        image = await loader.load_image(image_id, use_rgba=colour)
        options = DecodeOptions(use_rgba=colour)
        want = expected_frame(ds, index, all_frames[index], params, options)
        assert image.pixel_data.dtype == want.dtype, image_id
        np.testing.assert_array_equal(image.pixel_data, want, err_msg=image_id)
        assert (image.min_pixel_value, image.max_pixel_value) == (want.min(), want.max())
        assert image.color is colour and image.image_id == image_id
        checked += 1
    return checked


async def test_every_decodable_file_matches_the_reference(loader: ImageLoader) -> None:
    paths = [p for p in PYDICOM_FILES if pydicom_can_decode(p)]
    paths += [p for p in CORNERSTONE_FILES if "PixelData" in read(p)]
    checked = 0
    for path in paths:
        checked += await _check_file(loader, path)
    assert checked >= 200, checked


async def test_files_pydicom_cannot_decode_fail_typed(loader: ImageLoader) -> None:
    failed = 0
    for path in (p for p in PYDICOM_FILES if not pydicom_can_decode(p)):
        image_id = f"dicomfile:{path}"
        result = await loader.load_and_cache_images([image_id], return_exceptions=True)
        if isinstance(result[0], ImageLoaderError):
            assert result[0].image_id == image_id
            failed += 1
    assert failed >= 1


@pytest.mark.skipif(bool(missing_tools()), reason=f"encoders missing: {missing_tools()}")
async def test_lossless_variants_from_real_encoders_equal_the_original(
    loader: ImageLoader, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.mktemp("variants")
    variants = make_variants(
        out, ct=CORNERSTONE / "CTImage.dcm", rgb=CORNERSTONE / "TestPattern_RGB.dcm"
    )
    lossless = [v for v in variants if v.lossless]
    assert {v.transfer_syntax_uid for v in lossless} >= {
        "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.2", "1.2.840.10008.1.2",
    }  # fmt: skip
    for variant in lossless:
        origin = read(variant.origin)
        count = int(origin.get("NumberOfFrames", 1) or 1)
        for frame in range(1, count + 1):
            for prescale in (False, True):
                want = await loader.load_image(
                    f"dicomfile:{variant.origin}?frame={frame}", prescale=prescale
                )
                got = await loader.load_image(
                    f"dicomfile:{variant.path}?frame={frame}", prescale=prescale
                )
                assert got.pixel_data.dtype == want.pixel_data.dtype, variant.encoder
                np.testing.assert_array_equal(
                    got.pixel_data, want.pixel_data, err_msg=f"{variant.name}: {variant.encoder}"
                )
                assert got.transfer_syntax_uid == variant.transfer_syntax_uid


async def test_metadata_modules_are_registered_per_frame(loader: ImageLoader) -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("emri_small.dcm")
    image_id = f"dicomfile:{path}?frame=3"
    await loader.load_and_cache_image(image_id)
    modules = loader.metadata.modules(image_id)
    assert set(modules) >= {
        "imagePixelModule", "imagePlaneModule", "generalSeriesModule", "generalImageModule",
        "patientStudyModule", "sopCommonModule", "voiLutModule", "modalityLutModule",
        "multiframeModule",
    }  # fmt: skip
    pixel = modules["imagePixelModule"]
    assert isinstance(pixel, ImagePixelModule) and (pixel.rows, pixel.columns) == (64, 64)
    assert isinstance(modules["imagePlaneModule"], ImagePlaneModule)
    multi = modules["multiframeModule"]
    assert isinstance(multi, MultiframeModule) and multi.frame_number == 3
    assert multi.number_of_frames == 10


async def test_the_file_is_parsed_once_for_all_its_frames(loader: ImageLoader) -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("emri_small.dcm")
    ids = [f"dicomfile:{path}?frame={n}" for n in range(1, 11)]
    images = await loader.load_and_cache_images(ids)
    assert [i.image_id for i in images] == ids
    dicomfile = loader.builtin_loader("dicomfile")
    assert isinstance(dicomfile, DicomFileLoader)
    objects = dicomfile.objects
    assert objects.loads == 1
    # Once its last cached frame leaves the image cache, the parsed file goes too.
    assert len(objects) == 1
    for image_id in ids:
        loader.cache.remove(image_id)
    assert len(objects) == 0


async def test_frames_sharing_one_failed_read_each_name_their_own_image_id(
    loader: ImageLoader, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.dcm"
    ids = [f"dicomfile:{missing}?frame={n}" for n in (1, 2, 3)]
    results = await loader.load_and_cache_images(ids, return_exceptions=True)
    assert [type(r) for r in results] == [NotFoundError] * 3
    assert [r.image_id for r in results] == ids  # type: ignore[union-attr]
    assert [str(r).endswith(f"[imageId: {i}]") for r, i in zip(results, ids, strict=True)] == [
        True
    ] * 3


async def test_errors_name_the_image_id(loader: ImageLoader, tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    ct = Path(get_testdata_file("CT_small.dcm"))
    cases: list[tuple[str, type[ImageLoaderError]]] = [
        (f"dicomfile:{ct}?frame=2", NotFoundError),
        (f"dicomfile:{ct}?frame=0", InvalidImageIdError),
        (f"dicomfile:{ct}?frame=x", InvalidImageIdError),
        (f"dicomfile:{tmp_path}/missing.dcm", NotFoundError),
    ]
    cases.append((f"dicomfile:{CORNERSTONE / 'no-pixel-data.dcm'}", MetadataError))
    truncated = tmp_path / "truncated.dcm"
    garbage = tmp_path / "garbage.dcm"

    def write() -> None:
        data = ct.read_bytes()
        truncated.write_bytes(data[: len(data) // 2])
        garbage.write_bytes(b"\x00" * 200 + b"not dicom at all" * 10)

    await asyncio.to_thread(write)
    cases.append((f"dicomfile:{truncated}", DecodeError))
    cases.append((f"dicomfile:{garbage}", DecodeError))
    for image_id, kind in cases:
        with pytest.raises(kind) as info:
            await loader.load_image(image_id)
        assert info.value.image_id == image_id, (image_id, info.value)
    assert loader.in_flight == 0 and len(loader.cache) == 0


async def test_file_roots_confine_paths(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    root = tmp_path / "allowed"
    root.mkdir()
    inside = root / "ct.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), inside)
    outside = tmp_path / "outside.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), outside)
    (root / "escape.dcm").symlink_to(outside)
    async with ImageLoader(max_web_workers=0, access=AccessPolicy(roots=[root])) as loader:
        assert (await loader.load_image(f"dicomfile:{inside}")).rows == 128
        for path in (outside, root / ".." / "outside.dcm", root / "escape.dcm"):
            with pytest.raises(AccessDeniedError):
                await loader.load_image(f"dicomfile:{path}")
