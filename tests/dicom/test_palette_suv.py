"""PALETTE COLOR lookup tables (against pydicom's apply_color_lut) and PET SUV factors."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from imageloader import errors
from imageloader.decode.params import Palette
from imageloader.dicom.part10 import parse_part10, pixel_params

from ._dicomdata import CORNERSTONE, data_file, pydicom_warnings_allowed, read


def _path(name: str) -> str:
    if name.startswith("cornerstone/"):
        return str(CORNERSTONE / name.removeprefix("cornerstone/"))
    return data_file(name)


def _palette_of(path: str) -> Palette:
    with pydicom_warnings_allowed():
        obj = parse_part10(path)
        palette = obj.pixel_params().palette
    assert palette is not None
    return palette


def _assert_matches_pydicom(palette: Palette, ds: Dataset) -> None:
    entries, first, _ = palette.red_descriptor
    indices = np.arange(first, first + entries)
    with pydicom_warnings_allowed():
        expected = apply_color_lut(indices, ds)
    for channel, table in enumerate((palette.red, palette.green, palette.blue)):
        assert table.dtype == expected.dtype
        np.testing.assert_array_equal(table, expected[:, channel])


@pytest.mark.parametrize(
    "name",
    [
        "OBXXXX1A.dcm",  # 16-bit entries
        "OT-PAL-8-face.dcm",  # no File Meta, 200 entries
        "gdcm-US-ALOKA-16.dcm",  # segmented, descriptor 0 = 65536 entries
        "examples_palette.dcm",
        "cornerstone/TestPattern_Palette.dcm",  # 8-bit entries
        "cornerstone/TestPattern_Palette_16.dcm",
        "cornerstone/no-pixel-spacing.dcm",  # RLE ultrasound
    ],
)
def test_palette_matches_pydicom(name: str) -> None:
    path = _path(name)
    palette = _palette_of(path)
    _assert_matches_pydicom(palette, read(path))
    for table in (palette.red, palette.green, palette.blue):
        assert not table.flags.writeable  # shared by every frame: read-only


def test_segmented_palette_of_65536_entries() -> None:
    palette = _palette_of(data_file("gdcm-US-ALOKA-16.dcm"))
    assert palette.red_descriptor == (65536, 0, 16)
    assert palette.red.shape == (65536,) and palette.red.dtype == np.uint16


@pytest.mark.parametrize(
    ("big", "little"),
    [
        ("OBXXXX1A_expb.dcm", "OBXXXX1A.dcm"),
        ("gdcm-US-ALOKA-16_big.dcm", "gdcm-US-ALOKA-16.dcm"),
    ],
)
def test_big_endian_palettes_equal_their_little_endian_twin(big: str, little: str) -> None:
    be, le = _palette_of(data_file(big)), _palette_of(data_file(little))
    assert be.red_descriptor == le.red_descriptor
    for a, b in ((be.red, le.red), (be.green, le.green), (be.blue, le.blue)):
        np.testing.assert_array_equal(a, b)


def _palette_dataset(descriptor: list[int], **data: bytes) -> Dataset:
    ds = read(data_file("CT_small.dcm"))
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", descriptor)
    for keyword, value in data.items():
        setattr(ds, keyword, value)
        ds[keyword].VR = "OW"
    return ds


def test_descriptor_bits_follow_the_data_length() -> None:
    # Cornerstone: as many bytes as entries is 8-bit data, whatever the descriptor says.
    table = bytes(range(256))
    ds = _palette_dataset(
        [256, 0, 16],
        RedPaletteColorLookupTableData=table,
        GreenPaletteColorLookupTableData=table[::-1],
        BluePaletteColorLookupTableData=table,
    )
    palette = pixel_params(ds, ExplicitVRLittleEndian).palette
    assert palette is not None
    assert palette.red_descriptor == palette.blue_descriptor == (256, 0, 8)
    assert palette.red.dtype == np.uint8
    np.testing.assert_array_equal(palette.green, np.arange(255, -1, -1))


def test_segmented_lut_discrete_linear_and_indirect_segments() -> None:
    words = [0, 3, 10, 20, 30, 1, 4, 70, 2, 2, 0, 0]  # discrete, linear to 70, replay both
    segmented = struct.pack(f"<{len(words)}H", *words)
    ds = _palette_dataset(
        [14, 0, 16],
        SegmentedRedPaletteColorLookupTableData=segmented,
        SegmentedGreenPaletteColorLookupTableData=segmented,
        SegmentedBluePaletteColorLookupTableData=segmented,
    )
    palette = pixel_params(ds, ExplicitVRLittleEndian).palette
    assert palette is not None
    expected = [10, 20, 30, 40, 50, 60, 70, 10, 20, 30, 40, 50, 60, 70]
    assert palette.red.tolist() == expected
    _assert_matches_pydicom(palette, ds)


def test_palette_without_data_is_a_metadata_error() -> None:
    ds = _palette_dataset([256, 0, 8])
    with pytest.raises(errors.MetadataError, match=r"(?i)palette") as info:
        pixel_params(ds, ExplicitVRLittleEndian, image_id="wadors:pal")
    assert info.value.image_id == "wadors:pal"
    del ds.RedPaletteColorLookupTableDescriptor
    with pytest.raises(errors.MetadataError, match=r"(?i)palette"):
        pixel_params(ds, ExplicitVRLittleEndian)


# PET SUV --------------------------------------------------------------------


def _pet(**changes: object) -> Dataset:
    """A PET dataset: 70 kg, 370 MBq injected at 09:00, series at 10:00 (one hour later)."""
    ds = read(data_file("CT_small.dcm"))
    ds.Modality = "PT"
    ds.Units, ds.DecayCorrection = "BQML", "START"
    ds.CorrectedImage = ["DECY", "ATTN", "SCAT"]
    ds.PatientWeight = 70
    ds.SeriesDate, ds.SeriesTime = "20240102", "100000"
    ds.AcquisitionDate, ds.AcquisitionTime = "20240102", "100500.25"
    info = Dataset()
    info.RadiopharmaceuticalStartTime = "090000.000000"
    info.RadionuclideTotalDose = 370e6
    info.RadionuclideHalfLife = 6586.2
    ds.RadiopharmaceuticalInformationSequence = Sequence([info])
    with pydicom_warnings_allowed():  # some changes are invalid values on purpose
        for keyword, value in changes.items():
            target = info if keyword.startswith("Radio") else ds
            if value is None:
                delattr(target, keyword)
            else:
                setattr(target, keyword, value)
    return ds


def _suv(ds: Dataset) -> float | None:
    return pixel_params(ds, ExplicitVRLittleEndian).suvbw


def test_suv_body_weight_hand_computed() -> None:
    # 3600 s of decay: 370e6 * 2**(-3600 / 6586.2) = 253_314_180.24 Bq; 70_000 g / that.
    assert _suv(_pet()) == pytest.approx(2.7633668e-4, rel=1e-7)


def test_suv_start_date_time_wins_over_start_time() -> None:
    ds = _pet(RadiopharmaceuticalStartDateTime="20240102083000")  # 90 minutes of decay
    assert _suv(ds) == pytest.approx(70_000 / (370e6 * 2 ** (-5400 / 6586.2)), rel=1e-9)


def test_suv_uses_the_acquisition_time_when_the_series_time_is_later() -> None:
    ds = _pet(SeriesTime="110000", AcquisitionTime="100500")  # series after acquisition
    assert _suv(ds) == pytest.approx(70_000 / (370e6 * 2 ** (-3900 / 6586.2)), rel=1e-9)


@pytest.mark.parametrize(
    "changes",
    [
        {"PatientWeight": None},
        {"PatientWeight": 0},
        {"CorrectedImage": ["ATTN"]},
        {"DecayCorrection": "ADMIN"},
        {"Units": "CNTS"},  # without Philips scale factors
        {"Units": "MBQ"},
        {"RadionuclideTotalDose": None},
        {"RadionuclideHalfLife": None},
        {"RadiopharmaceuticalStartTime": None},
        {"RadiopharmaceuticalStartTime": "110000"},  # injected after the scan
        {"SeriesDate": "2024"},
        {"AcquisitionTime": None},
        {"Modality": "CT"},
    ],
    ids=str,
)
def test_suv_is_none_when_not_computable(changes: dict[str, object]) -> None:
    assert _suv(_pet(**changes)) is None


def test_suv_units_gml_are_already_suv() -> None:
    assert _suv(_pet(Units="GML")) == 1.0


def test_suv_philips_counts_scale_factor() -> None:
    ds = _pet(Units="CNTS")
    block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
    block.add_new(0x00, "DS", "0.000321")
    assert _suv(ds) == pytest.approx(0.000321)


def test_suv_ge_post_injection_time() -> None:
    ds = _pet(SeriesTime="110000", AcquisitionTime="100500")
    block = ds.private_block(0x0009, "GEMS_PETD_01", create=True)
    block.add_new(0x0D, "DT", "20240102093000")  # 30 minutes after injection
    assert _suv(ds) == pytest.approx(70_000 / (370e6 * 2 ** (-1800 / 6586.2)), rel=1e-9)


def test_suv_through_a_part10_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pet.dcm"
    with pydicom_warnings_allowed():
        _pet().save_as(path, enforce_file_format=True)
        assert parse_part10(path).pixel_params().suvbw == pytest.approx(2.7633668e-4, rel=1e-7)


def test_segmented_lut_that_replays_empty_segments_is_refused_in_time() -> None:
    # Found by fuzzing: 10,000 indirect segments each replaying 10,000 empty discrete
    # ones expand to nothing, after 10**8 steps (minutes) without a bound on the work.
    words = [0, 1, 7, *[2, 0xFFFF, 40003, 0] * 10_000, *[0, 0] * 10_000]
    segmented = struct.pack(f"<{len(words)}H", *words)
    ds = _palette_dataset(
        [256, 0, 16],
        SegmentedRedPaletteColorLookupTableData=segmented,
        SegmentedGreenPaletteColorLookupTableData=segmented,
        SegmentedBluePaletteColorLookupTableData=segmented,
    )
    start = time.perf_counter()
    with pytest.raises(errors.MetadataError, match="replays too many segments") as caught:
        pixel_params(ds, ExplicitVRLittleEndian, image_id="wadouri:lut")
    assert time.perf_counter() - start < 5
    assert caught.value.image_id == "wadouri:lut"
