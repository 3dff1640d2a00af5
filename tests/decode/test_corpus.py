"""Every test image with pixel data decodes to the pixel contract.

The reference is pydicom's stored values put through the contract by
``dicom_frames.expected_*``; for lossy JPEG it is libjpeg-turbo (the decoder we
chose, as Cornerstone3D uses), because JPEG decoders legitimately differ.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_files

from imageloader.decode.params import DecodeOptions
from imageloader.decode.worker import decode_frame
from imageloader.errors import ImageLoaderError
from tests.corpus import CORNERSTONE

from .dicom_frames import (
    expected_frame,
    frames,
    params_from_dataset,
    read,
    sample_frames,
    stored_reference,
)

PRESCALE = DecodeOptions(prescale=True)
STORED = DecodeOptions(prescale=False)
RGBA = DecodeOptions(use_rgba=True)


def _pixel_files() -> list[Path]:
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(set(get_testdata_files())):
            path = Path(name)
            try:
                ds = read(path)
            except Exception:
                continue
            if "PixelData" in ds and "Rows" in ds:
                found.append(path)
    return found


PYDICOM_FILES = _pixel_files()
CORNERSTONE_FILES = [
    *sorted(p for p in CORNERSTONE.iterdir() if p.is_file() and p.suffix == ".dcm"),
    CORNERSTONE / "CT1_J2KR",
    CORNERSTONE / "CT2_J2KR",
]


def _check_file(path: Path) -> None:
    ds = read(path)
    params = params_from_dataset(ds)
    colour = params.samples_per_pixel > 1 or params.photometric_interpretation == "PALETTE COLOR"
    all_frames = list(frames(ds))
    for index in sample_frames(ds):
        data = all_frames[index]
        for options in (RGBA,) if colour else (PRESCALE, STORED):
            got = decode_frame(data, params, options, image_id=f"{path.name}#{index}")
            want = expected_frame(ds, index, data, params, options)
            assert got.pixels.dtype == want.dtype, (index, options)
            np.testing.assert_array_equal(got.pixels, want, err_msg=f"frame {index} {options}")
            assert got.min_value == want.min() and got.max_value == want.max()
            assert got.color is colour
        if colour:  # RGB too, not only RGBA
            got = decode_frame(data, params, DecodeOptions(), image_id=path.name)
            assert got.pixels.shape == (params.rows, params.columns, 3)


def _pydicom_can_decode(path: Path) -> bool:
    try:
        stored_reference(read(path), 0)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("path", PYDICOM_FILES, ids=lambda p: p.name)
def test_pydicom_file(path: Path) -> None:
    if not _pydicom_can_decode(path):
        # Still: a clean result or our own error, never a foreign exception.
        ds = read(path)
        try:
            params = params_from_dataset(ds)
            data = next(frames(ds))
        except Exception as exc:
            pytest.skip(f"no pixel module to test: {type(exc).__name__}: {exc}")
        error: ImageLoaderError | None = None
        try:
            decode_frame(data, params, image_id=path.name)
        except ImageLoaderError as exc:  # DecodeError, or ImageTooLargeError for a wild header
            error = exc
        assert error is None or error.image_id == path.name
        return
    _check_file(path)


@pytest.mark.parametrize("path", CORNERSTONE_FILES, ids=lambda p: p.name)
def test_cornerstone_file(path: Path) -> None:
    if "PixelData" not in read(path):
        pytest.skip("no pixel data (structured report)")
    _check_file(path)


LOSSLESS_CT = [
    "CTImage.dcm_BigEndianExplicitTransferSyntax_1.2.840.10008.1.2.2.dcm",
    "CTImage.dcm_DeflatedExplicitVRLittleEndianTransferSyntax_1.2.840.10008.1.2.1.99.dcm",
    "CTImage.dcm_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm",
    "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm",
    "CTImage.dcm_JPEGProcess14SV1TransferSyntax_1.2.840.10008.1.2.4.70.dcm",
    "CTImage.dcm_JPEGProcess14TransferSyntax_1.2.840.10008.1.2.4.57.dcm",
    "CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm",
    "CTImage.dcm_LittleEndianImplicitTransferSyntax_1.2.840.10008.1.2.dcm",
    "CTImage.dcm_RLELosslessTransferSyntax_1.2.840.10008.1.2.5.dcm",
]


@pytest.mark.parametrize("name", LOSSLESS_CT)
def test_lossless_ct_equals_original(name: str) -> None:
    original = read(CORNERSTONE / "CTImage.dcm").pixel_array
    ds = read(CORNERSTONE / name)
    data = next(frames(ds))
    stored = decode_frame(data, params_from_dataset(ds), STORED)
    np.testing.assert_array_equal(stored.pixels, original)
    assert stored.pixels.dtype == np.int16
    # jpeg-lossless-decoder-js 2.1.2 (the hash Cornerstone recorded with it) zeroes the
    # last pixel; @cornerstonejs/jpeg-lossless-decoder-js 2.2.1 and ours must not.
    assert stored.pixels[-1, -1] == original[-1, -1] != 0
    hu = decode_frame(data, params_from_dataset(ds), PRESCALE)
    np.testing.assert_array_equal(hu.pixels, original.astype(np.int32) - 1024)
    assert hu.pixels.dtype == np.int16 and hu.prescale.scaled
    assert (hu.min_value, hu.max_value) == (-3024.0, 1378.0)


@pytest.mark.parametrize(
    ("suffix", "mean_error", "max_error"),
    [
        ("4.50", 25, 70),  # 8 bits for a 12-bit range (slope 32)
        ("4.51", 5, 40),
        ("4.53", 5, 40),
        ("4.55", 5, 40),
        ("4.81", 1, 1),  # near-lossless with NEAR=1
        ("4.91", 1, 6),
    ],
)
def test_lossy_ct_is_close_to_original(suffix: str, mean_error: float, max_error: float) -> None:
    """Lossy syntaxes (including .53/.55, which Cornerstone cannot decode) give the CT back."""
    original = read(CORNERSTONE / "CTImage.dcm").pixel_array.astype(np.float64) - 1024
    path = next(p for p in CORNERSTONE.glob("CTImage.dcm_*") if p.name.endswith(f"{suffix}.dcm"))
    ds = read(path)
    hu = decode_frame(next(frames(ds)), params_from_dataset(ds), PRESCALE)
    error = np.abs(hu.pixels.astype(np.float64) - original)
    assert error.mean() <= mean_error and error.max() <= max_error
