"""DICOM JSON → Dataset: real server quirks, bulk data, and parity with Part 10."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset

from imageloader import errors
from imageloader.dicom.dicomjson import (
    bulkdata_references,
    dataset_from_json,
    series_datasets,
    transfer_syntax_of,
)
from imageloader.dicom.modules import metadata_modules
from imageloader.dicom.part10 import frame_count, parse_part10, pixel_params
from imageloader.metadata import (
    ImagePixelModule,
    ImagePlaneModule,
    ModalityLutModule,
    VoiLutModule,
    module_to_json,
)

from ._dicomdata import CORNERSTONE, data_file, pydicom_warnings_allowed, read

METADATA = CORNERSTONE / "wadors" / "metadata"


@pytest.fixture
def orthanc_metadata() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(METADATA.read_text())
    return loaded


def test_orthanc_metadata_response(orthanc_metadata: list[dict[str, Any]]) -> None:
    (ds,) = series_datasets(orthanc_metadata)
    # No (0002,0010) and no (0008,3002) in Orthanc's series metadata.
    assert transfer_syntax_of(ds) is None
    # Pixel data and private blobs are BulkDataURIs: without a handler they are absent.
    assert "PixelData" not in ds and (0x0029, 0x1131) not in ds
    modules = metadata_modules(ds)
    plane = modules["imagePlaneModule"]
    assert isinstance(plane, ImagePlaneModule)
    # Several values sent as one backslash-joined string are split.
    assert plane.image_orientation_patient == (1.0, 7.0448747e-16, 0.0, 0.0, 0.0, -1.0)
    assert plane.image_position_patient == (-255.5, -175.0, -1.5)
    assert plane.pixel_spacing == (0.675781, 0.675781) and plane.slice_thickness == 1.0
    assert modules["voiLutModule"] == VoiLutModule(
        window_center=(50.0, 300.0), window_width=(350.0, 2000.0)
    )
    assert modules["modalityLutModule"] == ModalityLutModule(
        rescale_intercept=-1024.0, rescale_slope=1.0
    )
    pixel = modules["imagePixelModule"]
    assert isinstance(pixel, ImagePixelModule)
    assert (pixel.rows, pixel.columns, pixel.bits_stored, pixel.pixel_representation) == (
        512,
        512,
        12,
        1,
    )
    assert str(ds.PatientName) == "SIIM^Joe"  # a plain string, not a PN object
    assert ds.ImageType == ["ORIGINAL", "PRIMARY", "LOCALIZER", "CT_SOM5 TOP"]
    assert ds[0x00120000].value == 762  # UL sent as a string
    params = pixel_params(ds, "1.2.840.10008.1.2.1")
    assert (params.rows, params.bits_allocated, params.rescale_intercept) == (512, 16, -1024.0)


def test_bulkdata_handler(orthanc_metadata: list[dict[str, Any]]) -> None:
    calls: list[tuple[str, str, str]] = []

    def handler(tag: str, vr: str, uri: str) -> bytes | None:
        calls.append((tag, vr, uri))
        return b"\x01\x02" * 8 if tag == "7FE00010" else None

    ds = dataset_from_json(orthanc_metadata[0], bulkdata_handler=handler)
    assert ds.PixelData == b"\x01\x02" * 8
    assert ("7FE00010", "OW", "../../testImages/wadors/CTImageEvenAligned.dat") in calls
    assert (0x0029, 0x1131) not in ds  # the handler declined it: left out, not emptied
    assert sorted(calls) == sorted(bulkdata_references(orthanc_metadata[0]))


def test_bulkdata_references_include_nested_ones() -> None:
    obj = {
        "00081140": {
            "vr": "SQ",
            "Value": [{"00281201": {"vr": "OW", "BulkDataURI": "http://x/lut"}}],
        },
        "7FE00010": {"vr": "OB", "BulkDataURI": "http://x/pixels"},
    }
    assert list(bulkdata_references(obj)) == [
        ("00281201", "OW", "http://x/lut"),
        ("7FE00010", "OB", "http://x/pixels"),
    ]


def test_server_quirks_are_normalised() -> None:
    ds = dataset_from_json(
        {
            "00280010": {"Value": [64]},  # no vr: from the dictionary
            "00280011": {"vr": "US", "Value": ["32"]},
            "00200013": {"vr": "IS", "Value": ["7"]},
            "00281050": {"vr": "DS", "Value": ["40\\400"]},
            "00280030": {"vr": "DS", "Value": [0.5, "0.25"]},
            "00080060": {"vr": "CS", "Value": []},
            "00100010": {"vr": "PN", "Value": ["Doe^Jane"]},
            "00080008": {"vr": "CS", "Value": ["DERIVED\\SECONDARY"]},
            "0020000d": {"vr": "UI", "Value": ["1.2.3"]},  # lower-case tag
            "00091001": {"vr": "UN", "Value": ["text"]},  # UN must be binary: dropped
            "00181063": {"vr": "DS", "Value": ["abc"]},  # not a number: empty
        }
    )
    assert (ds.Rows, ds.Columns, ds.InstanceNumber) == (64, 32, 7)
    assert ds.WindowCenter == [40.0, 400.0]
    assert ds.PixelSpacing == [0.5, 0.25]
    assert "Modality" in ds and ds.Modality in ("", None)
    assert ds.PatientName.family_name == "Doe"
    assert ds.ImageType == ["DERIVED", "SECONDARY"]
    assert ds.StudyInstanceUID == "1.2.3"
    assert (0x0009, 0x1001) not in ds
    assert ds.FrameTime in ("", None)


def test_an_unreadable_element_costs_only_itself(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="imageloader.dicom"):
        ds = dataset_from_json(
            {
                "00280010": {"vr": "US", "Value": [8]},
                "00281201": {"vr": "OW", "InlineBinary": "not base64!"},
            }
        )
    assert ds.Rows == 8 and "RedPaletteColorLookupTableData" not in ds
    assert any("00281201" in record.getMessage() for record in caplog.records)


def test_file_meta_and_transfer_syntax() -> None:
    ds = dataset_from_json(
        {
            "00020010": {"vr": "UI", "Value": ["1.2.840.10008.1.2.4.50"]},
            "00083002": {"vr": "UI", "Value": ["1.2.840.10008.1.2.1"]},
            "00280010": {"vr": "US", "Value": [8]},
        }
    )
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert "TransferSyntaxUID" not in ds  # group 2 lives in file_meta only
    assert transfer_syntax_of(ds) == "1.2.840.10008.1.2.4.50"
    available = dataset_from_json({"00083002": {"vr": "UI", "Value": ["1.2.840.10008.1.2.5"]}})
    assert transfer_syntax_of(available) == "1.2.840.10008.1.2.5"


@pytest.mark.parametrize("bad", ["[1, 2]", b"{oops", 42, ["a"]])
def test_malformed_json_is_a_metadata_error(bad: Any) -> None:
    with pytest.raises(errors.MetadataError) as info:
        dataset_from_json(bad, image_id="wadors:x")
    assert info.value.image_id == "wadors:x"


def test_series_datasets_from_text_and_malformed_responses() -> None:
    text = json.dumps([{"00280010": {"vr": "US", "Value": [1]}}, {}])
    datasets = series_datasets(text)
    assert len(datasets) == 2 and datasets[0].Rows == 1 and len(datasets[1]) == 0
    for bad in ('{"00280010": {}}', "nope", 7):
        with pytest.raises(errors.MetadataError):
            series_datasets(bad)  # type: ignore[arg-type]


PARITY_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "emri_small.dcm",
    "eCT_Supplemental.dcm",
    "rtdose.dcm",
    "OBXXXX1A.dcm",
    "gdcm-US-ALOKA-16.dcm",
    "OT-PAL-8-face.dcm",
    "cornerstone/CTImage.dcm",
    "cornerstone/no-pixel-spacing.dcm",
    "cornerstone/TestPattern_Palette_16.dcm",
]


def _path(name: str) -> str:
    if name.startswith("cornerstone/"):
        return str(CORNERSTONE / name.removeprefix("cornerstone/"))
    return data_file(name)


def _params_json(ds: Dataset, syntax: str, frame: int) -> dict[str, Any]:
    params = pixel_params(ds, syntax, frame=frame)
    return {f.name: module_to_json(getattr(params, f.name)) for f in dataclasses.fields(params)}


@pytest.mark.parametrize("name", PARITY_FILES)
def test_json_gives_the_modules_of_the_part10_object(name: str) -> None:
    path = _path(name)
    with pydicom_warnings_allowed():
        obj = parse_part10(path)
        source = read(path)
        del source.PixelData  # metadata responses never carry pixel data inline
        from_json = dataset_from_json(source.to_json_dict())
        frames = frame_count(obj.dataset)
        assert frame_count(from_json) == frames
        for frame in sorted({1, frames}):
            expected = module_to_json(metadata_modules(obj.dataset, frame=frame))
            assert module_to_json(metadata_modules(from_json, frame=frame)) == expected
            syntax = obj.transfer_syntax_uid
            assert _params_json(from_json, syntax, frame) == _params_json(
                obj.dataset, syntax, frame
            )


def test_palette_data_as_bulk_data() -> None:
    path = data_file("OBXXXX1A.dcm")
    with pydicom_warnings_allowed():
        source = read(path)
        del source.PixelData
        blobs: dict[str, bytes] = {}

        def to_uri(element: Any) -> str:
            uri = f"http://pacs/bulk/{element.tag:08X}"
            blobs[uri] = element.value
            return uri

        obj = source.to_json_dict(bulk_data_threshold=64, bulk_data_element_handler=to_uri)
    assert obj["00281201"] == {"vr": "OW", "BulkDataURI": "http://pacs/bulk/00281201"}
    syntax = "1.2.840.10008.1.2.1"
    # Without the bulk data: the descriptors are known, the tables are not.
    bare = dataset_from_json(obj)
    pixel = metadata_modules(bare)["imagePixelModule"]
    assert isinstance(pixel, ImagePixelModule)
    assert pixel.red_palette_color_lookup_table_descriptor == (256, 0, 16)
    assert pixel.red_palette_color_lookup_table_data is None
    with pytest.raises(errors.MetadataError, match=r"(?i)palette"):
        pixel_params(bare, syntax)
    # With it: the same palette as the Part 10 object.
    full = dataset_from_json(obj, bulkdata_handler=lambda tag, vr, uri: blobs.get(uri))
    palette = pixel_params(full, syntax).palette
    expected = pixel_params(read(path), syntax).palette
    assert palette is not None and expected is not None
    np.testing.assert_array_equal(palette.green, expected.green)
