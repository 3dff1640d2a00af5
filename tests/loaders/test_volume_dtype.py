"""A volume's dtype is its slices' dtype (issue 12), decided from the metadata first.

The volume rule (``imageloader.volume.volume_dtype``) and the decode worker's
(``decode.pixels.apply_modality_lut``) are one composition, ``dtype_for_range`` of the
scaled range, over the pixel module's range and over a frame's own min and max. Here:
the two agree for every kind of series and for every file of the corpus (where they
cannot, a signed series without negative values, the slice fits exactly); a slice
that does not fit is refused by name; ``dtype=`` asks for another type; and a volume,
a prefetched ``.npy`` and ``load_series_dask`` give the same array.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from imageloader import ImageLoader
from imageloader import events as ev
from imageloader.decode.worker import decode_frame
from imageloader.dicom.modules import metadata_modules
from imageloader.dicom.part10 import parse_part10
from imageloader.errors import LoadFailedError, MetadataError, NotFoundError
from imageloader.metadata import GeneralSeriesModule, ImagePixelModule, ModalityLutModule
from imageloader.output import PrefetchJob, PrefetchReport, prefetch
from imageloader.volume import cast_problem, volume_dtype
from tests.dicom._dicomdata import (
    BROKEN,
    PYDICOM_PIXEL_FILES,
    cornerstone_files,
    data_file,
    pydicom_warnings_allowed,
    read,
)
from tests.dicom.test_palette_suv import _pet
from tests.integrations.series import make_study

SLICES = 6

# -- series of each kind, as files on disk ---------------------------------------------


def write_slices(
    folder: Path,
    source: Dataset,
    pixels: Callable[[int], np.ndarray],
    count: int = SLICES,
    **changes: Any,
) -> list[str]:
    """``count`` slices of ``source`` (one series, 2 mm apart along z) with ``changes``.

    ``pixels(index)`` is each slice's stored array. Returns their dicomfile: imageIds,
    in an order that is not the scan order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.name
    study, series = (generate_uid(entropy_srcs=["volume-dtype", key, k]) for k in "st")
    paths = []
    for index in reversed(range(count)):
        ds = copy.deepcopy(source)
        with pydicom_warnings_allowed():
            for keyword, value in changes.items():
                if value is None:
                    if keyword in ds:
                        delattr(ds, keyword)
                else:
                    setattr(ds, keyword, value)
            ds.PixelData = np.ascontiguousarray(pixels(index)).tobytes()
            ds.ImagePositionPatient = [0.0, 0.0, 2.0 * index]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.PixelSpacing = [0.5, 0.5]
            ds.InstanceNumber = index + 1
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = generate_uid(entropy_srcs=["volume-dtype", key, str(index)])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = folder / f"{index:03d}.dcm"
            ds.save_as(path, enforce_file_format=False)
        paths.append(path)
    return [f"dicomfile:{p}" for p in paths]


def _ct() -> tuple[Dataset, np.ndarray]:
    ds = read(data_file("CT_small.dcm"))  # signed 16-bit, intercept -1024, values 128..2191
    return ds, ds.pixel_array.astype(np.int16)


def ct_int16(folder: Path) -> list[str]:
    ds, ct = _ct()
    return write_slices(folder, ds, lambda k: ct + np.int16(7 * k))


def ct_unsigned_12_bits(folder: Path) -> list[str]:
    # The usual CT: unsigned 12 bits, intercept -1024: -1024..3071 is int16.
    ds, ct = _ct()
    changes = {"PixelRepresentation": 0, "BitsStored": 12, "HighBit": 11}
    return write_slices(folder, ds, lambda k: (ct + 7 * k).astype(np.uint16), **changes)


def ct_unsigned_16_bits(folder: Path) -> list[str]:
    # 16 bits and intercept -1024: -1024..64511 stays int16 (Cornerstone's assumption).
    ds, ct = _ct()
    changes = {"PixelRepresentation": 0, "BitsStored": 16, "HighBit": 15}
    return write_slices(folder, ds, lambda k: (ct + 7 * k).astype(np.uint16), **changes)


def mr_unsigned(folder: Path) -> list[str]:
    ds = read(data_file("MR_small.dcm"))  # values 127..2145
    mr = ds.pixel_array.astype(np.uint16)
    changes = {"PixelRepresentation": 0, "BitsStored": 12, "HighBit": 11}
    return write_slices(folder, ds, lambda k: mr + np.uint16(5 * k), **changes)


def grey_8_bits(folder: Path) -> list[str]:
    ds, ct = _ct()
    grey = ((ct - ct.min()) * 255 // (ct.max() - ct.min())).astype(np.uint8)  # 0..255
    changes = {
        "BitsAllocated": 8,
        "BitsStored": 8,
        "HighBit": 7,
        "PixelRepresentation": 0,
        "RescaleSlope": None,
        "RescaleIntercept": None,
    }
    return write_slices(folder, ds, lambda k: np.roll(grey, k, axis=0), **changes)


def rgb(folder: Path) -> list[str]:
    ds = read(data_file("SC_rgb.dcm"))  # 100x100 RGB, interleaved
    colour = ds.pixel_array
    return write_slices(folder, ds, lambda k: np.roll(colour, 9 * k, axis=1))


def pet_suv(folder: Path) -> list[str]:
    ds = _pet(RescaleSlope=1, RescaleIntercept=0)  # SUV body weight: 2.76e-4 per Bq/ml
    ct = ds.pixel_array.astype(np.int16)
    return write_slices(folder, ds, lambda k: ct + np.int16(3 * k))


def slope_half(folder: Path) -> list[str]:
    # Odd maxima: every slice's scaled max has a half (so each is float32, not truncated).
    ds, ct = _ct()
    changes = {"RescaleSlope": 0.5, "RescaleIntercept": 0}
    return write_slices(folder, ds, lambda k: ct + np.int16(2 * k), **changes)


def rtdose(_folder: Path) -> list[str]:
    # pydicom's RTDOSE: 15 frames of uint32 along GridFrameOffsetVector, DoseGridScaling 1e-6.
    path = data_file("rtdose.dcm")
    frames = int(read(path).NumberOfFrames)
    return [f"dicomfile:{path}?frame={n}" for n in range(1, frames + 1)]


#: Each kind of series, and the dtype its volume (and each slice) must have.
KINDS: dict[str, tuple[Callable[[Path], list[str]], type[np.generic]]] = {
    "ct-int16": (ct_int16, np.int16),
    "ct-unsigned-12-bits": (ct_unsigned_12_bits, np.int16),
    "ct-unsigned-16-bits": (ct_unsigned_16_bits, np.int16),
    "mr-unsigned": (mr_unsigned, np.uint16),
    "grey-8-bits": (grey_8_bits, np.uint8),
    "rgb": (rgb, np.uint8),
    "pet-suv": (pet_suv, np.float32),
    "slope-0.5": (slope_half, np.float32),
    "rtdose": (rtdose, np.float32),
}


async def decoded(image_ids: list[str]) -> list[np.ndarray]:
    """Each image's pixels as a fresh loader decodes them (no volume involved)."""
    async with ImageLoader(max_web_workers=0) as fresh:
        return [(await fresh.load_image(i)).pixel_data for i in image_ids]


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_volume_has_the_dtype_of_its_decoded_slices(kind: str, tmp_path: Path) -> None:
    build, expected = KINDS[kind]
    ids = build(tmp_path / kind)
    async with ImageLoader(max_web_workers=0) as loader:
        volume = await loader.create_and_cache_volume(kind, ids)
        # Decided from the metadata: the array exists before any slice has arrived.
        assert volume.loaded_count == 0
        assert volume.data.dtype == expected
        await asyncio.wait_for(volume.loaded(), 30)
        cached = loader.cache.get_image(volume.image_ids[0])
        assert cached is not None and cached.pixel_data.dtype == expected
    slices = await decoded(list(volume.image_ids))
    assert {s.dtype for s in slices} == {np.dtype(expected)}
    np.testing.assert_array_equal(volume.data, np.stack(slices))


# -- the rule against the decode worker, over the whole corpus ---------------------------

#: Files of the corpus whose first frame does not decode at all (not a dtype question).
UNDECODABLE = {
    "JPEG2000-embedded-sequence-delimiter.dcm": "its codestream claims 1024x3722445056 pixels",
    "no-pixel-data.dcm": "an SR: no pixel data",
}

CORPUS = [
    Path(p)
    for p in (*PYDICOM_PIXEL_FILES, *cornerstone_files())
    if Path(p).name not in BROKEN and Path(p).name not in UNDECODABLE
]


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: Path(p).name)
def test_the_volume_rule_is_the_decode_workers_rule_on_the_corpus(path: Path) -> None:
    with pydicom_warnings_allowed():
        obj = parse_part10(str(path))
        modules = metadata_modules(obj.dataset, frame=1)
        frame = decode_frame(obj.frame(1), obj.pixel_params(1))
    volume = volume_dtype(modules)
    pixels = frame.pixels
    # Every frame fits its volume exactly...
    assert cast_problem(pixels, volume) is None
    if pixels.dtype != volume:
        # ...and has its dtype, but where the metadata cannot say which: signed data
        # without negative values decodes (as Cornerstone's) to the unsigned type.
        assert modules["imagePixelModule"].pixel_representation == 1
        assert frame.min_value >= 0 and pixels.dtype.kind == "u"
        assert pixels.dtype.itemsize <= volume.itemsize


# -- the rule on metadata alone ------------------------------------------------------------


def _modules(
    bits: int = 16,
    stored: int | None = None,
    signed: bool = False,
    slope: float = 1.0,
    intercept: float = 0.0,
    modality: str = "CT",
) -> dict[str, Any]:
    return {
        "imagePixelModule": ImagePixelModule(
            samples_per_pixel=1,
            photometric_interpretation="MONOCHROME2",
            rows=4,
            columns=4,
            bits_allocated=bits,
            bits_stored=stored or bits,
            high_bit=(stored or bits) - 1,
            pixel_representation=int(signed),
        ),
        "modalityLutModule": ModalityLutModule(rescale_slope=slope, rescale_intercept=intercept),
        "generalSeriesModule": GeneralSeriesModule(modality=modality),
    }


@pytest.mark.parametrize(
    ("modules", "prescale", "expected"),
    [
        ([_modules(16, 12)], True, np.uint16),
        ([_modules(16, 12, intercept=-1024)], True, np.int16),
        ([_modules(16, signed=True, intercept=-1024)], True, np.int16),
        ([_modules(16, signed=True, intercept=-1024)], False, np.int16),
        ([_modules(16, 12, intercept=-1024)], False, np.uint16),  # stored values
        ([_modules(16, slope=2)], True, np.uint16),  # a whole-number LUT stays 16-bit
        ([_modules(16, 12, slope=0.5)], True, np.float32),
        ([_modules(16, 12, intercept=-0.5)], True, np.float32),
        ([_modules(8)], True, np.uint8),
        ([_modules(8, signed=True)], True, np.int8),
        ([_modules(8, intercept=-1024)], True, np.int16),  # its range is -1024..-769
        ([_modules(32)], True, np.uint32),  # more than 16 bits: the range decides
        ([_modules(32, signed=True)], True, np.float32),  # int32 is no pixel container
        ([_modules(1)], True, np.uint8),
        # Every slice's modules count: one slice with a fractional slope makes float32,
        # one unsigned 16-bit slice in a signed 12-bit series makes the union int16.
        ([_modules(16, 12), _modules(16, 12, slope=0.5)], True, np.float32),
        ([_modules(16, 12, signed=True), _modules(16)], True, np.int16),
        ([_modules(16, 12), _modules(16, 12, intercept=100)], True, np.uint16),
    ],
)
def test_volume_dtype_from_metadata(
    modules: list[dict[str, Any]], prescale: bool, expected: type[np.generic]
) -> None:
    assert volume_dtype(*modules, prescale=prescale) == expected


def test_volume_dtype_needs_a_pixel_module() -> None:
    with pytest.raises(MetadataError, match="imagePixelModule"):
        volume_dtype({"generalSeriesModule": GeneralSeriesModule(modality="CT")})
    with pytest.raises(MetadataError):
        volume_dtype()


# -- slices of another dtype than the volume's -----------------------------------------------


@pytest.mark.parametrize(
    ("values", "dtype", "problem"),
    [
        (np.array([0, 255], np.uint16), np.int16, None),  # unsafe by type, not by value
        (np.array([-5, 200], np.int16), np.uint8, "outside uint8's range 0..255"),
        (np.array([0, 40000], np.uint16), np.int16, "outside int16's range"),
        (np.array([0, 70000], np.uint32), np.uint16, "outside uint16's range"),
        (np.array([1.0, 2.0], np.float32), np.int16, "float32 values (1..2) would be truncated"),
        (np.array([0.1, np.nan, np.inf], np.float64), np.float32, None),  # rounded
        (np.array([1e300], np.float64), np.float32, "outside float32's range"),
        (np.array([2049, 70000], np.int32), np.float16, "outside float16's range"),
        (np.array([2049, -60000], np.int32), np.float16, None),  # rounded to 2048
        (np.array([3, 2**31 - 1], np.int32), np.float32, None),  # rounded
        (np.array([1, 2], np.uint8), np.float32, None),  # safe
    ],
)
def test_cast_problem(values: np.ndarray, dtype: type[np.generic], problem: str | None) -> None:
    found = cast_problem(values, np.dtype(dtype))
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize("kind", ["signed-without-negatives", "a-dark-slice"])
async def test_a_slice_of_a_narrower_dtype_is_copied_in_exactly(kind: str, tmp_path: Path) -> None:
    ds = read(data_file("MR_small.dcm"))  # signed 16-bit, values 127..2145
    mr = ds.pixel_array.astype(np.int16)
    if kind == "signed-without-negatives":
        ids = write_slices(tmp_path, ds, lambda k: mr + np.int16(k))
        volume_type, slice_types = np.int16, {np.dtype(np.uint16)}
    else:  # unsigned 12 bits; slice 2 holds nothing above 255 and decodes as uint8
        dark = (mr // 10).astype(np.uint16)
        ids = write_slices(
            tmp_path,
            ds,
            lambda k: dark if k == 2 else mr.astype(np.uint16),
            PixelRepresentation=0,
            BitsStored=12,
            HighBit=11,
        )
        volume_type, slice_types = np.uint16, {np.dtype(np.uint16), np.dtype(np.uint8)}
    async with ImageLoader(max_web_workers=0) as loader:
        volume = await loader.create_and_cache_volume("v", ids)
        await asyncio.wait_for(volume.loaded(), 30)
        slices = await decoded(list(volume.image_ids))
        # A load after the volume gives what a fresh decode gives (a slice cast on
        # the way in is not cached as a view of another dtype).
        again = [(await loader.load_image(i)).pixel_data for i in volume.image_ids]
    assert volume.data.dtype == volume_type
    assert not volume.failures and volume.loaded_count == SLICES
    assert {s.dtype for s in slices} == slice_types
    assert [a.dtype for a in again] == [s.dtype for s in slices]
    for k, pixels in enumerate(slices):
        np.testing.assert_array_equal(volume.data[k], pixels)


def _ct_with_padding(folder: Path) -> tuple[list[str], str]:
    """An int16 CT whose slice 3 holds -32768 (padding): -33792 after the intercept."""
    ds, ct = _ct()

    def pixels(k: int) -> np.ndarray:
        out = ct + np.int16(k)
        if k == 3:
            out = out.copy()
            out[:4, :4] = -32768
        return out

    ids = write_slices(folder, ds, pixels)
    return ids, next(i for i in ids if i.endswith("003.dcm"))


async def test_a_slice_that_does_not_fit_fails_by_name(tmp_path: Path) -> None:
    ids, padded = _ct_with_padding(tmp_path)
    async with ImageLoader(max_web_workers=0) as loader:
        progress: list[int] = []
        loader.events.on(ev.IMAGE_LOAD_PROGRESS, lambda e: progress.append(e.detail["loaded"]))
        volume = await loader.create_and_cache_volume("padded", ids)
        assert volume.data.dtype == np.int16
        with pytest.raises(LoadFailedError, match="1 of 6 slices failed") as info:
            await asyncio.wait_for(volume.loaded(), 30)
        assert padded in str(info.value)
        assert list(volume.failures) == [padded]
        error = volume.failures[padded]
        assert isinstance(error, MetadataError) and error.image_id == padded
        assert "float32 slice does not fit the int16 volume 'padded'" in str(error)
        assert "float32 values (-33792.." in str(error)
        assert volume.loaded_count == SLICES - 1 and len(progress) == SLICES - 1
        k = volume.image_ids.index(padded)
        assert not volume.data[k].any()  # nothing wrapped into it
        assert padded not in loader.cache
    slices = await decoded(list(volume.image_ids))
    assert slices[k].dtype == np.float32 and slices[k].min() == -33792
    for j, pixels in enumerate(slices):
        if j != k:
            np.testing.assert_array_equal(volume.data[j], pixels)


async def test_dtype_asks_for_another_type(tmp_path: Path) -> None:
    ids, padded = _ct_with_padding(tmp_path / "ct")
    async with ImageLoader(max_web_workers=0) as loader:
        # float32 holds every slice, the padded one too.
        wide = await loader.create_and_cache_volume("wide", ids, dtype=np.float32)
        await asyncio.wait_for(wide.loaded(), 30)
        assert wide.data.dtype == np.float32 and not wide.failures
        # Only the slice decoded as float32 is cached, as a view; the int16 ones are
        # not (a load of them must still give int16).
        cached = loader.cache.get_image(padded)
        assert cached is not None and np.shares_memory(cached.pixel_data, wide.data)
        assert [i for i in ids if i in loader.cache] == [padded]
        assert (await loader.load_image(ids[0])).pixel_data.dtype == np.int16
        # uint8 holds none of them: nothing is wrapped, each is refused by name.
        narrow = await loader.create_and_cache_volume("narrow", ids, dtype="uint8")
        with pytest.raises(LoadFailedError, match="6 of 6 slices failed"):
            await asyncio.wait_for(narrow.loaded(), 30)
        assert sorted(narrow.failures) == sorted(ids)
        assert all(e.image_id == i for i, e in narrow.failures.items())
        assert "outside uint8's range" in str(narrow.failures[ids[0]])
        assert not narrow.data.any()
    slices = await decoded(list(wide.image_ids))
    np.testing.assert_array_equal(wide.data, np.stack([s.astype(np.float32) for s in slices]))


async def test_dtype_refuses_what_cannot_hold_the_series(tmp_path: Path) -> None:
    pet = pet_suv(tmp_path / "pet")
    ct = ct_int16(tmp_path / "ct")
    async with ImageLoader(max_web_workers=0) as loader:
        with pytest.raises(ValueError, match=r"float32.*would truncate them"):
            await loader.create_and_cache_volume("pet", pet, dtype=np.int16)
        for wrong in (bool, np.complex64, ">i2", "U4"):
            with pytest.raises(ValueError, match="integer or floating type"):
                await loader.create_and_cache_volume("ct", ct, dtype=wrong)
        assert loader.cache.volume_ids() == []


async def test_use_16bit_is_gone(tmp_path: Path) -> None:
    # What it asked for (16-bit containers) is the rule now; the argument is refused.
    ct = ct_int16(tmp_path)
    async with ImageLoader(max_web_workers=0) as loader:
        with pytest.raises(TypeError, match="use_16bit"):
            await loader.create_and_cache_volume("ct", ct, use_16bit=True)  # type: ignore[call-arg]


# -- three paths, one array: volume, prefetch .npy, load_series_dask ------------------------


def _dask_volume(image_ids: list[str], **kwargs: Any) -> np.ndarray:
    import dask

    from imageloader.integrations.dask import close_process_loaders, load_series_dask

    try:
        with dask.config.set(scheduler="synchronous"):  # this process's loader
            return np.asarray(load_series_dask(image_ids, batch_size=4, **kwargs).compute())
    finally:
        close_process_loaders()


def _ct_study(folder: Path) -> list[str]:
    # The CT series of the synthetic study the CLI and Dask tests use.
    return [f"dicomfile:{p}" for p in make_study(folder, "volume-dtype").ct_files]


@pytest.mark.parametrize(
    "kind", ["study-ct", "mr-unsigned", "grey-8-bits", "rgb", "pet-suv", "slope-0.5", "rtdose"]
)
async def test_volume_prefetch_and_dask_give_the_same_array(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("dask")
    pytest.importorskip("distributed")
    build = _ct_study if kind == "study-ct" else KINDS[kind][0]
    ids = build(tmp_path / "series")
    output = tmp_path / "out"
    async with ImageLoader(max_web_workers=0) as loader:
        volume = await loader.create_and_cache_volume(kind, ids)
        await asyncio.wait_for(volume.loaded(), 30)
        report = await prefetch(loader, ids, output=output)
    assert report.ok and len(report.written) == 1
    written = report.written[0]
    assert written.layout == "volume"
    manifest = json.loads(written.manifest.read_text())
    assert manifest["image_ids"] == list(volume.image_ids)  # the same scan order
    npy = np.load(written.data)
    lazy = await asyncio.to_thread(_dask_volume, list(volume.image_ids))
    for other in (npy, lazy):
        assert other.dtype == volume.data.dtype
        assert other.shape == volume.data.shape
        np.testing.assert_array_equal(other, volume.data)
    if kind == "study-ct":
        assert volume.data.dtype == np.int16
    assert manifest["dtype"] == str(volume.data.dtype)


def _mr_series(folder: Path, case: str) -> list[str]:
    ds = read(data_file("MR_small.dcm"))  # signed 16-bit, values 127..2145
    mr = ds.pixel_array.astype(np.int16)
    if case == "signed-without-negatives":  # every slice decodes to uint16
        return write_slices(folder, ds, lambda k: mr + np.int16(k))
    if case == "one-slice-with-negatives":  # it decodes to int16, the others to uint16
        return write_slices(folder, ds, lambda k: mr - np.int16(200) if k == 0 else mr)
    # Unsigned 12 bits, the first slice in scan order dark: uint8, the others uint16.
    dark = (mr // 10).astype(np.uint16)
    return write_slices(
        folder,
        ds,
        lambda k: dark if k == 0 else mr.astype(np.uint16),
        PixelRepresentation=0,
        BitsStored=12,
        HighBit=11,
    )


@pytest.mark.parametrize(
    "case", ["signed-without-negatives", "one-slice-with-negatives", "a-dark-first-slice"]
)
async def test_the_three_paths_agree_on_heterogeneous_slices(case: str, tmp_path: Path) -> None:
    pytest.importorskip("dask")
    pytest.importorskip("distributed")
    ids = _mr_series(tmp_path / "series", case)
    async with ImageLoader(max_web_workers=0) as loader:
        volume = await loader.create_and_cache_volume(case, ids)
        await asyncio.wait_for(volume.loaded(), 30)
        report = await prefetch(loader, ids, output=tmp_path / "out")
    assert not volume.failures
    npy = np.load(report.written[0].data)
    lazy = await asyncio.to_thread(_dask_volume, list(volume.image_ids))
    for other in (npy, lazy):
        np.testing.assert_array_equal(other, volume.data)  # values first, then the dtype
        assert other.dtype == volume.data.dtype
    # The manifest says the array's dtype; each frame's record stays its Image's.
    manifest = json.loads(report.written[0].manifest.read_text())
    assert manifest["dtype"] == str(volume.data.dtype)
    slices = await decoded(list(volume.image_ids))
    assert [f["image"]["data_type"] for f in manifest["frames"]] == [s.dtype.name for s in slices]


async def test_the_three_paths_agree_without_the_modality_lut(tmp_path: Path) -> None:
    # Unsigned 12 bits, intercept -1024: int16 through the LUT, uint16 without it. The
    # writer reads which one its frames were decoded with from their sidecars.
    pytest.importorskip("dask")
    ids = ct_unsigned_12_bits(tmp_path / "series")
    async with ImageLoader(max_web_workers=0, prescale=False) as loader:
        volume = await loader.create_and_cache_volume("stored", ids)
        await asyncio.wait_for(volume.loaded(), 30)
        report = await prefetch(loader, ids, output=tmp_path / "out")
    assert volume.data.dtype == np.uint16 and not volume.failures
    npy = np.load(report.written[0].data)
    options = {"prescale": False}
    lazy = await asyncio.to_thread(_dask_volume, list(volume.image_ids), loader_options=options)
    for other in (npy, lazy):
        np.testing.assert_array_equal(other, volume.data)
        assert other.dtype == np.uint16


async def test_a_resumed_prefetch_writes_the_same_file(tmp_path: Path) -> None:
    # The series' dtype comes from every frame's sidecar, whichever run staged it: an
    # interrupted run resumed gives the bytes of a run that went through at once.
    ids = _mr_series(tmp_path / "series", "one-slice-with-negatives")
    interrupted, once = tmp_path / "interrupted", tmp_path / "once"
    async with ImageLoader(max_web_workers=0) as loader:
        job = PrefetchJob(loader, ids, output=interrupted)
        task = asyncio.ensure_future(job.run())

        def stop_after_two(report: PrefetchReport) -> None:
            if report.loaded >= 2:
                task.cancel()

        job.progress = stop_after_two
        with pytest.raises(asyncio.CancelledError):
            await task
        assert job.report.interrupted and not job.report.written
        assert not list(interrupted.glob("*.npy"))
        again = await prefetch(loader, ids, output=interrupted)
        fresh = await prefetch(loader, ids, output=once)
        volume = await loader.create_and_cache_volume("v", ids)
        await asyncio.wait_for(volume.loaded(), 30)
    assert again.ok and fresh.ok
    assert again.resumed >= 2 and again.loaded >= 1 and again.resumed + again.loaded == SLICES
    (resumed,), (whole,) = again.written, fresh.written
    assert resumed.data.read_bytes() == whole.data.read_bytes()
    npy = np.load(resumed.data)
    assert npy.dtype == volume.data.dtype == np.int16  # not int32 (int16 + uint16 frames)
    np.testing.assert_array_equal(npy, volume.data)
    first, second = (json.loads(w.manifest.read_text()) for w in (resumed, whole))
    assert first["dtype"] == second["dtype"] == "int16"
    assert first["image_ids"] == second["image_ids"] == list(volume.image_ids)


async def test_prefetch_refuses_a_slice_that_does_not_fit_by_name(tmp_path: Path) -> None:
    ids, padded = _ct_with_padding(tmp_path / "series")
    out = tmp_path / "out"
    async with ImageLoader(max_web_workers=0) as loader:
        report = await prefetch(loader, ids, output=out)
    assert report.loaded == SLICES and not report.written and not report.ok
    [(key, error)] = report.errors.items()
    assert key.startswith("series:")
    assert isinstance(error, MetadataError) and error.image_id == padded
    assert "float32 frame does not fit the int16 series" in str(error)
    assert "float32 values (-33792.." in str(error)
    # Nothing written, nothing half-written; the frames stay staged for a later run.
    assert sorted(p.name for p in out.iterdir()) == [".staging", "index.csv"]
    assert len(list((out / ".staging").rglob("*.npy"))) == SLICES
    # The index lists complete series only: none.
    assert (out / "index.csv").read_text().count("\n") == 1


def test_load_series_dask_refuses_a_slice_that_does_not_fit_by_name(tmp_path: Path) -> None:
    pytest.importorskip("dask")
    ids, padded = _ct_with_padding(tmp_path / "series")
    with pytest.raises(MetadataError) as info:
        _dask_volume(ids)
    assert info.value.image_id == padded
    assert "float32 frame does not fit the int16 series" in str(info.value)
    # A dtype asked for is held to the same rule: uint8 holds none of the slices.
    with pytest.raises(MetadataError, match="outside uint8's range") as narrow:
        _dask_volume(ids, dtype="uint8")
    assert narrow.value.image_id in ids
    for wrong in (bool, np.complex64, ">i2"):
        with pytest.raises(ValueError, match="integer or floating type"):
            _dask_volume(ids, dtype=wrong)


async def test_load_series_dask_with_a_dtype_equals_the_volume_with_it(tmp_path: Path) -> None:
    pytest.importorskip("dask")
    ids, _ = _ct_with_padding(tmp_path / "series")
    async with ImageLoader(max_web_workers=0) as loader:
        volume = await loader.create_and_cache_volume("wide", ids, dtype=np.float32)
        await asyncio.wait_for(volume.loaded(), 30)
    lazy = await asyncio.to_thread(_dask_volume, list(volume.image_ids), dtype=np.float32)
    assert lazy.dtype == np.float32
    np.testing.assert_array_equal(lazy, volume.data)


def test_load_series_dask_reads_every_frames_metadata_first(tmp_path: Path) -> None:
    # The dtype needs every frame's pixel module: as for a volume, a frame whose
    # metadata cannot be read fails the series up front, by name.
    pytest.importorskip("dask")
    ids = ct_int16(tmp_path / "series")
    missing = f"dicomfile:{tmp_path / 'no-such-file.dcm'}"
    with pytest.raises(NotFoundError) as info:
        _dask_volume([*ids, missing])
    assert info.value.image_id == missing
