"""Test helpers: frames and PixelParams from pydicom datasets, and the expected pixels.

The production dataset → PixelParams mapping lives in ``imageloader.dicom``; this
small one is only for the decode tests. ``expected_*`` compute the pixel contract
from pydicom's stored values independently of ``imageloader.decode``: plain
float64 arithmetic and an explicit dtype table.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from imageloader.decode.params import DecodeOptions, Palette, PixelParams
from imageloader.decode.syntaxes import SYNTAXES, Family, jpeg_is_ycbcr, read_header


def read(path: str | Path) -> Dataset:
    """dcmread, quietly (several pydicom test files are deliberately malformed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _number(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0]
    return float(value)


def _lut(ds: Dataset, colour: str, descriptor: tuple[int, int, int]) -> np.ndarray:
    entries = descriptor[0] or 65536
    data = ds.get(f"{colour}PaletteColorLookupTableData")
    if data is not None:
        width = len(data) // entries
        lut = np.frombuffer(data, dtype=f"<u{width}")[:entries]
    else:
        from pydicom.pixels.processing import _expand_segmented_lut

        segmented = ds[f"Segmented{colour}PaletteColorLookupTableData"].value
        fmt = "B" if descriptor[2] == 8 else "H"
        order = "<" if ds.file_meta.TransferSyntaxUID.is_little_endian else ">"
        words = np.frombuffer(segmented, dtype=f"{order}u{1 if fmt == 'B' else 2}")
        lut = np.asarray(_expand_segmented_lut(tuple(int(w) for w in words), fmt))
    # An 8-bit table stored in 16-bit words holds 8-bit values.
    return lut.astype(np.uint8 if descriptor[2] <= 8 and lut.max() <= 255 else np.uint16)


def palette_from_dataset(ds: Dataset) -> Palette | None:
    """The dataset's Palette Color LUTs, or None."""
    if ds.get("PhotometricInterpretation") != "PALETTE COLOR":
        return None
    descriptors = {}
    for colour in ("Red", "Green", "Blue"):
        desc = [int(v) for v in ds[f"{colour}PaletteColorLookupTableDescriptor"].value]
        descriptors[colour] = (desc[0], desc[1], desc[2])
    return Palette(
        red_descriptor=descriptors["Red"],
        green_descriptor=descriptors["Green"],
        blue_descriptor=descriptors["Blue"],
        red=_lut(ds, "Red", descriptors["Red"]),
        green=_lut(ds, "Green", descriptors["Green"]),
        blue=_lut(ds, "Blue", descriptors["Blue"]),
    )


def _rescale(ds: Dataset, keyword: str) -> float | None:
    """Top-level, else (enhanced multi-frame) the shared or first per-frame group's value."""
    value = _number(ds, keyword)
    if value is not None:
        return value
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in ds.get(groups, [])[:1]:
            for transform in item.get("PixelValueTransformationSequence", []):
                value = _number(transform, keyword)
                if value is not None:
                    return value
    return None


def params_from_dataset(ds: Dataset, transfer_syntax_uid: str | None = None) -> PixelParams:
    """PixelParams from the dataset's pixel module, modality LUT and palette."""
    return PixelParams(
        transfer_syntax_uid=transfer_syntax_uid or str(ds.file_meta.TransferSyntaxUID),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples_per_pixel=int(ds.SamplesPerPixel),
        bits_allocated=int(ds.BitsAllocated),
        bits_stored=int(ds.BitsStored),
        pixel_representation=int(ds.PixelRepresentation),
        photometric_interpretation=str(ds.PhotometricInterpretation),
        planar_configuration=int(ds.get("PlanarConfiguration") or 0),
        rescale_slope=_rescale(ds, "RescaleSlope"),
        rescale_intercept=_rescale(ds, "RescaleIntercept"),
        modality=ds.get("Modality"),
        suvbw=None,  # Cornerstone computes SUVbw from PET metadata; none in these files
        dose_grid_scaling=_number(ds, "DoseGridScaling"),
        palette=palette_from_dataset(ds),
    )


def frame_count(ds: Dataset) -> int:
    """NumberOfFrames (1 when absent)."""
    return int(ds.get("NumberOfFrames") or 1)


def sample_frames(ds: Dataset) -> list[int]:
    """First, middle and last frame: enough to catch offsets without decoding 120 frames."""
    n = frame_count(ds)
    return sorted({0, n // 2, n - 1})


def frames(ds: Dataset) -> Iterator[bytes]:
    """Every frame's bytes as a loader hands them to ``decode_frame``."""
    syntax = ds.file_meta.TransferSyntaxUID
    n = frame_count(ds)
    if syntax.is_encapsulated:
        yield from generate_frames(ds.PixelData, number_of_frames=n)
        return
    data = ds.PixelData
    if not syntax.is_little_endian and ds.BitsAllocated == 8 and ds["PixelData"].VR == "OW":
        # 8-bit samples in big-endian OW words: the loader unswaps them (pydicom does too).
        data = np.frombuffer(data[: len(data) & ~1], ">u2").astype("<u2").tobytes()
    samples = 2 if ds.PhotometricInterpretation == "YBR_FULL_422" else int(ds.SamplesPerPixel)
    bits = int(ds.Rows) * int(ds.Columns) * samples * int(ds.BitsAllocated)
    assert bits % 8 == 0, "bit-packed frames that do not start on a byte"
    size = bits // 8
    for index in range(n):
        yield bytes(data[index * size : (index + 1) * size])


def frame(ds: Dataset, index: int) -> bytes:
    """One frame's bytes."""
    for i, data in enumerate(frames(ds)):
        if i == index:
            return data
    raise IndexError(index)


# -- the contract, computed independently ---------------------------------------------

_TABLE = [
    (0, 255, np.uint8),
    (0, 65535, np.uint16),
    (0, 4294967295, np.uint32),
    (-128, 127, np.int8),
    (-32768, 32767, np.int16),
]


def contract_dtype(lo: float, hi: float) -> np.dtype:
    """First entry of Cornerstone's table whose range holds [lo, hi]; float32 otherwise."""
    if (
        math.isfinite(lo)
        and math.isfinite(hi)
        and float(lo).is_integer()
        and float(hi).is_integer()
    ):
        for low, high, dtype in _TABLE:
            if (low == 0) == (lo >= 0) and low <= lo and hi <= high:
                return np.dtype(dtype)
    return np.dtype(np.float32)


def expected_grey(stored: np.ndarray, params: PixelParams, options: DecodeOptions) -> np.ndarray:
    """Cornerstone's preScale applied to stored values, in its container."""
    slope = params.rescale_slope if params.rescale_slope is not None else 1.0
    intercept = params.rescale_intercept if params.rescale_intercept is not None else 0.0
    pt = params.modality == "PT" and params.suvbw is not None and math.isfinite(params.suvbw)
    dose = params.modality == "RTDOSE" and params.dose_grid_scaling is not None
    identity = slope == 1 and intercept == 0 and not pt and not dose
    values = stored.astype(np.float64)
    if options.prescale and not identity:
        if dose:
            values = values * params.dose_grid_scaling
        else:
            values = values * slope + intercept
            if pt:
                values = values * params.suvbw
    return values.astype(contract_dtype(values.min(), values.max()))


def expected_ybr_to_rgb(ybr: np.ndarray) -> np.ndarray:
    """YBR_FULL → RGB with Cornerstone's coefficients, half-to-even rounding, clamped."""
    y, cb, cr = (ybr[..., i].astype(np.float64) for i in range(3))
    red = y + 1.402 * (cr - 128)
    green = y - 0.34414 * (cb - 128) - 0.71414 * (cr - 128)
    blue = y + 1.772 * (cb - 128)
    return np.clip(np.round(np.stack([red, green, blue], axis=-1)), 0, 255).astype(np.uint8)


def with_alpha(rgb: np.ndarray) -> np.ndarray:
    """RGB → RGBA with alpha 255."""
    alpha = np.full((*rgb.shape[:-1], 1), 255, dtype=np.uint8)
    return np.concatenate([rgb, alpha], axis=-1)


def expected_palette(indices: np.ndarray, palette: Palette) -> np.ndarray:
    """Index through the LUTs with clipping, shifting 16-bit tables that hold wide values."""
    tables = [np.asarray(t, dtype=np.int64) for t in (palette.red, palette.green, palette.blue)]
    shift = 8 if palette.red_descriptor[2] > 8 and max(int(t.max()) for t in tables) > 255 else 0
    first = palette.red_descriptor[1]
    index = np.clip(indices.astype(np.int64) - first, 0, len(tables[0]) - 1)
    return np.stack([np.minimum(t[index] >> shift, 255) for t in tables], -1).astype(np.uint8)


def pillow_jpeg(data: bytes, *, convert: bool) -> np.ndarray:
    """libjpeg-turbo (through Pillow): YCbCr→RGB when ``convert``, else the stored samples."""
    from PIL import Image

    with Image.open(io.BytesIO(data), formats=("JPEG",)) as image:
        # An Adobe transform of 0 means libjpeg leaves the samples alone anyway.
        if not convert and image.mode == "RGB" and image.info.get("adobe_transform") != 0:
            image.draft("YCbCr", image.size)
        return np.asarray(image)


def stored_reference(ds: Dataset, index: int, **kwargs: Any) -> np.ndarray:
    """pydicom's stored values for one frame (sign-corrected, no colour conversion)."""
    from pydicom.pixels import pixel_array

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pixel_array(ds, index=index, raw=True, **kwargs)


def _lossy_jpeg_reference(data: bytes, params: PixelParams) -> tuple[np.ndarray, bool]:
    """libjpeg-turbo's output and whether it is already RGB."""
    info = read_header(data, Family.JPEG)
    assert info is not None
    if info.precision == 8:
        convert = jpeg_is_ycbcr(info, params.photometric_interpretation, params.samples_per_pixel)
        return pillow_jpeg(data, convert=convert), convert
    import imagecodecs  # Pillow reads 8-bit JPEG only

    return imagecodecs.jpeg8_decode(data), False


def expected_frame(
    ds: Dataset, index: int, data: bytes, params: PixelParams, options: DecodeOptions
) -> np.ndarray:
    """The pixel contract's answer for frame ``index`` (0-based) of ``ds``.

    pydicom's stored values through ``expected_*``; for lossy JPEG, libjpeg-turbo's
    output (the decoder chosen, as Cornerstone3D's), since JPEG decoders differ.
    """
    family = SYNTAXES[params.transfer_syntax_uid].family
    already_rgb = False
    if family is Family.JPEG:
        samples, already_rgb = _lossy_jpeg_reference(data, params)
    else:
        samples = stored_reference(ds, index)
    if params.photometric_interpretation == "PALETTE COLOR":
        rgb = expected_palette(samples, params.palette)
    elif params.samples_per_pixel == 1:
        if family is Family.JPEG:  # the reference decoder gives unsigned samples
            samples = _signed(samples, params)
        return expected_grey(samples, params, options)
    else:
        if samples.dtype.itemsize > 1:
            samples = (samples >> max(0, params.bits_stored - 8)).astype(np.uint8)
        ybr = params.photometric_interpretation in ("YBR_FULL", "YBR_FULL_422")
        rgb = expected_ybr_to_rgb(samples) if ybr and not already_rgb else samples
    return with_alpha(rgb) if options.use_rgba else rgb


def _signed(samples: np.ndarray, params: PixelParams) -> np.ndarray:
    if params.pixel_representation == 0:
        return samples
    shift = samples.dtype.itemsize * 8 - params.bits_stored
    signed = samples.view(f"i{samples.dtype.itemsize}")
    return (signed << shift) >> shift
