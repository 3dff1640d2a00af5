"""DICOM JSON of the wrong types, through ``add_series_metadata`` and the ``wadors:`` loader.

A JSON value of the wrong type in any element (a bool where a list belongs, an object
where a string does, a sequence sent with a string VR...) must give an Image when the
element does not matter for the image, and otherwise one of our typed errors naming
the imageId: never a TypeError (or any foreign exception) escaping, nor one wrapped as
LoadFailedError. The regression: MR_small.dcm's metadata with
``"52009229": {"vr": "AE", "Value": false}`` raised ``TypeError: 'bool' object is not
iterable`` out of ``add_series_metadata``.

Each case runs through both paths against a local DICOMweb server: the series path
(series metadata registered first, then the frame loaded) and the instance path (the
frame loaded with nothing registered, so ``wadors:`` fetches the instance's metadata).
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pydicom
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from imageloader import ImageLoader, dicomweb
from imageloader.dicom.dicomjson import dataset_from_json
from imageloader.dicom.modules import metadata_modules_by_frame
from imageloader.errors import (
    ImageLoaderError,
    ImageTooLargeError,
    LoadFailedError,
    ResponseFormatError,
)
from imageloader.http import HttpOptions
from imageloader.image import Image
from tests.servers import instance_json, serve

from ._dicomdata import data_file, read

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
BOUNDARY = "malformed-json-boundary"
FAST = HttpOptions(retries=0, backoff_base=0.01, backoff_max=0.02, read_timeout=5.0)

#: The element replacing the tested one; "VR" stands for the element's own VR.
WRONG: dict[str, Any] = {
    "Value false": {"vr": "VR", "Value": False},
    "Value true": {"vr": "VR", "Value": True},
    "Value 0": {"vr": "VR", "Value": 0},
    "Value 1.5": {"vr": "VR", "Value": 1.5},
    "Value a string": {"vr": "VR", "Value": "x"},
    "Value an object": {"vr": "VR", "Value": {}},
    "Value a name object": {"vr": "VR", "Value": {"Alphabetic": 1}},
    "Value null": {"vr": "VR", "Value": None},
    "items [false]": {"vr": "VR", "Value": [False]},
    "items [7]": {"vr": "VR", "Value": [7]},
    "items [object]": {"vr": "VR", "Value": [{}]},
    "items [list]": {"vr": "VR", "Value": [[1, 2]]},
    "items mixed": {"vr": "VR", "Value": [1, "a", None, {}, True, [3]]},
    "items [name, bad components]": {"vr": "VR", "Value": [{"Alphabetic": True, "x": "y"}]},
    "VR AE, Value false": {"vr": "AE", "Value": False},
    "VR AE, Value 7": {"vr": "AE", "Value": 7},
    "VR OB, Value [false]": {"vr": "OB", "Value": [False]},
    "VR US, Value [7]": {"vr": "US", "Value": [7]},
    "VR SQ with an item": {"vr": "SQ", "Value": [{"00280010": {"vr": "US", "Value": [2]}}]},
    "VR PN, items [1]": {"vr": "PN", "Value": [1]},
    "VR XX": {"vr": "XX", "Value": [1]},
    "VR a number": {"vr": 5, "Value": ["7"]},
    "InlineBinary a number": {"vr": "VR", "InlineBinary": 5},
    "InlineBinary not base64": {"vr": "VR", "InlineBinary": "not base64!"},
    "BulkDataURI a number": {"vr": "VR", "BulkDataURI": 5},
    "BulkDataURI an object": {"vr": "VR", "BulkDataURI": {"uri": "x"}},
    "element false": False,
    "element a list": [{"vr": "VR", "Value": [1]}],
    "element a string": "x",
    "element null": None,
}


@dataclass(frozen=True)
class Kind:
    """An element to break: its tag, VR, and whether the image survives it."""

    name: str
    tag: str
    vr: str
    #: The image does not need it: breaking it must still give an Image.
    irrelevant: bool = True


KINDS = [
    Kind("string CS Modality", "00080060", "CS"),
    Kind("string CS ImageType", "00080008", "CS"),
    Kind("string UI FrameOfReferenceUID", "00200052", "UI"),
    Kind("numeric DS WindowCenter", "00281050", "DS"),
    Kind("numeric IS InstanceNumber", "00200013", "IS"),
    Kind("numeric DS PixelSpacing", "00280030", "DS"),
    Kind("PN PatientName", "00100010", "PN"),
    Kind("SQ ReferencedImageSequence", "00081140", "SQ"),
    Kind("SQ SharedFunctionalGroups", "52009229", "SQ"),
    Kind("SQ PerFrameFunctionalGroups", "52009230", "SQ"),
    Kind("pixel US Rows", "00280010", "US", irrelevant=False),
    Kind("pixel US BitsAllocated", "00280100", "US", irrelevant=False),
    Kind("pixel CS PhotometricInterpretation", "00280004", "CS", irrelevant=False),
    Kind("multi-frame IS NumberOfFrames", "00280008", "IS", irrelevant=False),
]


def broken(kind: Kind, wrong: Any) -> Any:
    """``wrong`` for ``kind``'s element, "VR" replaced by its VR."""

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (kind.vr if v == "VR" else fill(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    return fill(copy.deepcopy(wrong))


@pytest.fixture(scope="module")
def source() -> tuple[dict[str, Any], bytes]:
    """MR_small.dcm as instance metadata (with this server's UIDs) and its one frame."""
    ds = read(data_file("MR_small.dcm"))
    assert not ds.file_meta.TransferSyntaxUID.is_compressed
    meta = instance_json(ds)
    meta["0020000D"] = {"vr": "UI", "Value": [STUDY]}
    meta["0020000E"] = {"vr": "UI", "Value": [SERIES]}
    meta["00080018"] = {"vr": "UI", "Value": [SOP]}
    return meta, bytes(ds.PixelData)


@asynccontextmanager
async def dicomweb_server(metadata: dict[str, Any], frame: bytes) -> AsyncIterator[str]:
    """Series metadata, instance metadata and the frame of one instance; yields the base URL."""
    series = f"/dicom-web/studies/{STUDY}/series/{SERIES}"
    body = json.dumps([metadata]).encode()

    async def metadata_response(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/dicom+json")

    async def frames(request: web.Request) -> web.Response:
        head = (
            f"--{BOUNDARY}\r\nContent-Type: application/octet-stream; "
            "transfer-syntax=1.2.840.10008.1.2.1\r\n\r\n"
        ).encode()
        payload = head + frame + f"\r\n--{BOUNDARY}--\r\n".encode()
        ctype = f'multipart/related; type="application/octet-stream"; boundary={BOUNDARY}'
        return web.Response(body=payload, headers={"Content-Type": ctype})

    app = web.Application()
    app.router.add_get(f"{series}/metadata", metadata_response)
    app.router.add_get(f"{series}/instances/{SOP}/metadata", metadata_response)
    app.router.add_get(f"{series}/instances/{SOP}/frames/{{frames}}", frames)
    server: TestServer
    async with serve(app) as server:
        yield str(server.make_url("/dicom-web"))


def image_id_of(base: str) -> str:
    return f"wadors:{base}/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/1"


async def outcome(call: Callable[[], Awaitable[Any]], image_id: str) -> Any:
    """What ``call()`` gave: its result, or the typed error (checked to name ``image_id``)."""
    error: ImageLoaderError
    try:
        return await call()
    except ImageLoaderError as exc:
        error = exc
    # LoadFailedError is the loader wrapping a foreign exception: a bug as well.
    assert not isinstance(error, LoadFailedError), f"a foreign exception: {error!r}"
    assert error.image_id == image_id, f"{error!r} names {error.image_id!r}, not {image_id!r}"
    return error


async def through_series(loader: ImageLoader, base: str) -> Image | ImageLoaderError:
    image_id = image_id_of(base)
    ids = await outcome(lambda: dicomweb.add_series_metadata(loader, base, STUDY, SERIES), image_id)
    if isinstance(ids, ImageLoaderError):
        return ids
    assert ids[:1] == [image_id]  # (a wrong NumberOfFrames may list more frames)
    result: Image | ImageLoaderError = await outcome(lambda: loader.load_image(image_id), image_id)
    return result


async def through_instance(loader: ImageLoader, base: str) -> Image | ImageLoaderError:
    image_id = image_id_of(base)
    result: Image | ImageLoaderError = await outcome(lambda: loader.load_image(image_id), image_id)
    return result


PATHS = {"series": through_series, "instance": through_instance}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("wrong", sorted(WRONG))
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
async def test_wrong_typed_json_gives_an_image_or_a_typed_error(
    source: tuple[dict[str, Any], bytes], kind: Kind, wrong: str, path: str
) -> None:
    metadata, frame = source
    metadata = copy.deepcopy(metadata)
    metadata[kind.tag] = broken(kind, WRONG[wrong])
    async with (
        dicomweb_server(metadata, frame) as base,
        ImageLoader(max_web_workers=0, http=FAST) as loader,
    ):
        result = await PATHS[path](loader, base)
    if kind.irrelevant:
        assert isinstance(result, Image), result
        assert (result.rows, result.columns) == (64, 64)


async def test_the_issue_example_gives_the_image_through_both_paths(
    source: tuple[dict[str, Any], bytes],
) -> None:
    metadata, frame = source
    metadata = {**metadata, "52009229": {"vr": "AE", "Value": False}}
    async with dicomweb_server(metadata, frame) as base:
        for path in PATHS.values():
            async with ImageLoader(max_web_workers=0, http=FAST) as loader:
                image = await path(loader, base)
                assert isinstance(image, Image), image


async def test_a_series_error_names_the_first_frame_of_the_failing_instance(
    source: tuple[dict[str, Any], bytes],
) -> None:
    metadata, frame = source
    metadata = {**metadata, "00280008": {"vr": "IS", "Value": [2**31 - 1]}}
    async with (
        dicomweb_server(metadata, frame) as base,
        ImageLoader(max_web_workers=0, http=FAST) as loader,
    ):
        with pytest.raises(ImageTooLargeError) as info:
            await dicomweb.add_series_metadata(loader, base, STUDY, SERIES)
        assert info.value.image_id == image_id_of(base)


# -- the boundary itself -------------------------------------------------------------


def test_a_sequence_with_a_wrong_vr_and_a_bool_is_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metadata = instance_json(read(data_file("MR_small.dcm")))
    metadata["52009229"] = {"vr": "AE", "Value": False}
    ds = dataset_from_json(metadata)
    assert "SharedFunctionalGroupsSequence" not in ds
    assert any("52009229" in r.getMessage() for r in caplog.records)
    (modules,) = metadata_modules_by_frame(ds)
    assert "imagePixelModule" in modules


def test_a_known_tag_is_read_with_its_dictionary_vr() -> None:
    ds = dataset_from_json(
        {
            # A sequence sent as a string VR: still a sequence, its item kept.
            "52009229": {"vr": "LO", "Value": [{"00289110": {"vr": "SQ", "Value": [{}]}}]},
            "00280010": {"vr": "SQ", "Value": [{}]},  # Rows as a sequence: no number in it
            "00280011": {"vr": "DS", "Value": ["64"]},  # same JSON type, other VR: read as US
            "00280106": {"vr": "SS", "Value": [-5]},  # "US or SS": either is fine
            "00091010": {"vr": "LO", "Value": ["private"]},  # unknown tag: as given
        }
    )
    assert ds["SharedFunctionalGroupsSequence"].VR == "SQ"
    assert len(ds.SharedFunctionalGroupsSequence) == 1
    assert ds["Rows"].VR == "US" and ds.Rows is None
    assert ds["Columns"].VR == "US" and ds.Columns == 64
    assert ds["SmallestImagePixelValue"].VR == "SS" and ds.SmallestImagePixelValue == -5
    assert ds[0x00091010].value == "private"


def test_values_of_the_wrong_type_are_null_and_items_keep_their_place() -> None:
    ds = dataset_from_json(
        {
            "00080008": {"vr": "CS", "Value": ["ORIGINAL", 5, True, {}, "PRIMARY"]},
            "00281050": {"vr": "DS", "Value": [True, "40", {}, 1.5]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": 1}, "Doe^Jane", 7]},
            "00280009": {"vr": "AT", "Value": ["00181063", True, "nothex!!", 0x00280010]},
            "52009230": {"vr": "SQ", "Value": [5, {"00200013": {"vr": "IS", "Value": [2]}}]},
            "00080060": {"vr": "CS", "Value": "MR"},  # one value, not in a list
        }
    )
    assert list(ds.ImageType) == ["ORIGINAL", "", "", "", "PRIMARY"]
    assert list(ds.WindowCenter) == [None, 40.0, None, 1.5]
    assert [str(n) for n in ds.PatientName] == ["", "Doe^Jane", ""]
    assert [None if t is None else int(t) for t in ds.FrameIncrementPointer] == [
        0x00181063,
        None,
        None,
        0x00280010,
    ]
    items = ds.PerFrameFunctionalGroupsSequence
    assert len(items) == 2 and len(items[0]) == 0 and items[1].InstanceNumber == 2
    assert ds.Modality == "MR"


@pytest.mark.parametrize(
    "element",
    [
        {"vr": "US", "Value": False},
        {"vr": "US", "Value": {}},
        {"vr": "SQ", "Value": "x"},
        {"vr": "SQ", "Value": 1},
        {"vr": "OW", "Value": [1, 2]},
        {"vr": "UN", "Value": ["text"]},
        {"vr": "OW", "InlineBinary": 5},
        {"vr": "OW", "InlineBinary": "not base64!"},
        {"vr": "US", "InlineBinary": "AAE="},  # InlineBinary is for binary VRs
        {"vr": "OW", "BulkDataURI": 5},
        {"vr": "US", "Value": [1], "BulkDataURI": ["http://x"]},
        7,
        [1],
    ],
    ids=repr,
)
def test_malformed_elements_are_left_out(element: Any) -> None:
    vr = element.get("vr") if isinstance(element, dict) else None
    tag = {"OW": "00281201", "UN": "00281201", "SQ": "00081140"}.get(str(vr), "00280010")
    ds = dataset_from_json({tag: element, "00280011": {"vr": "US", "Value": [8]}})
    assert int(tag, 16) not in ds and ds.Columns == 8


def test_inline_binary_is_read_as_pydicom_reads_it() -> None:
    ds = dataset_from_json(
        {
            "00281201": {"vr": "OW", "InlineBinary": "AAEC\nAwQF"},  # MIME line breaks
            "00281202": {"vr": "OW", "InlineBinary": "AAE"},  # bad padding: left out
            "00281203": {"vr": "OW", "InlineBinary": "AAEC\u00e9"},  # not ASCII: left out
        }
    )
    assert ds.RedPaletteColorLookupTableData == bytes(range(6))
    assert "GreenPaletteColorLookupTableData" not in ds
    assert "BluePaletteColorLookupTableData" not in ds


def test_sequences_nested_too_deep_are_left_out() -> None:
    from imageloader.dicom.dicomjson import MAX_SEQUENCE_DEPTH, bulkdata_references

    leaf = {"00281201": {"vr": "OW", "BulkDataURI": "http://x/lut"}}
    for depth in (MAX_SEQUENCE_DEPTH, 300):
        # Deep enough to exhaust the stack while building the dataset, were it not bounded
        # (a server's JSON parser may well take the 900 levels).
        obj: dict[str, Any] = dict(leaf)
        for _ in range(depth):
            obj = {"00081140": {"vr": "SQ", "Value": [obj]}}
        ds = dataset_from_json(obj)
        refs = list(bulkdata_references(obj))
        levels = 0
        while "ReferencedImageSequence" in ds:
            ds = ds.ReferencedImageSequence[0]
            levels += 1
        assert levels == MAX_SEQUENCE_DEPTH  # the deeper ones left out
        assert len(refs) == (1 if depth == MAX_SEQUENCE_DEPTH else 0)


def test_series_metadata_reads_uids_and_numbers_of_any_type() -> None:
    items: list[dict[str, Any]] = [
        {"00080018": {"vr": "UI", "Value": ["2"]}, "00200013": {"Value": [float("inf")]}},
        {"00080018": {"vr": "UI", "Value": True}, "00200013": 5},
        {"00080018": 5, "00200013": {"Value": {"a": 1}}},
        {"00080018": {"vr": "UI", "Value": [{"a": 1}]}, "00200013": {"Value": [[1]]}},
        {"00080018": {"vr": "UI", "Value": ["1"]}, "00200013": {"Value": ["3"]}},
    ]
    keys = sorted(items, key=dicomweb._sort_key)
    # Instance number first (unreadable ones last), then the SOP Instance UID.
    assert [dicomweb._text(i, "00080018") for i in keys] == ["1", None, None, None, "2"]


def test_pydicom_sequence_values_are_read_as_sequences() -> None:
    from imageloader.dicom._values import FrameView, sequence_items

    ds = read(data_file("MR_small.dcm"))
    assert sequence_items(None) == [] and sequence_items(False) == [] and sequence_items("ab") == []
    item = pydicom.Dataset()
    assert sequence_items(item) == [item]
    ds.SharedFunctionalGroupsSequence = [item]
    assert FrameView(ds).items("SharedFunctionalGroupsSequence") == [item]


@pytest.mark.parametrize("uid", ["1.2/../../studies/9", "1.2?x=1", "1.2#f", "1..2", "x" * 70])
async def test_a_uid_that_would_change_a_url_is_refused(
    source: tuple[dict[str, Any], bytes], uid: str
) -> None:
    metadata, frame = source
    metadata = {**metadata, "00080018": {"vr": "UI", "Value": [uid]}}
    async with (
        dicomweb_server(metadata, frame) as base,
        ImageLoader(max_web_workers=0, http=FAST) as loader,
    ):
        with pytest.raises(ResponseFormatError, match="is not a DICOM UID"):
            await dicomweb.add_series_metadata(loader, base, STUDY, SERIES)
