"""DICOM JSON (QIDO-RS / WADO-RS metadata) → pydicom datasets, tolerant of real servers.

Servers bend the PS3.18 Annex F model: numbers sent as strings, several values in
one backslash-joined string (``"Value": ["50\\\\300"]``), person names as plain
strings, empty ``Value`` arrays, missing ``vr``, and no File Meta (Orthanc's series
metadata lacks (0002,0010)). :func:`dataset_from_json` normalises these before
``pydicom.Dataset.from_json`` and drops (with a log record) an element it still
cannot read, so one odd private attribute never fails a load.

It is also the one place where the JSON's types are checked, so that every value in
the dataset is of the type its VR promises (a broken server or a hostile one cannot
hand the readers in :mod:`._values` a bool where a sequence belongs):

- a known tag sent with a VR it cannot have is read with its dictionary VR (a
  Shared Functional Groups Sequence sent as ``{"vr": "AE", "Value": false}`` is a
  sequence, not an AE holding a bool);
- an element that is not an object, a ``Value`` that is not a list (a lone string or
  number is one value; a bool, null or object is nothing), a ``Value`` on a binary VR,
  and an ``InlineBinary`` or ``BulkDataURI`` that is not a string (or InlineBinary
  that is not base64, or on a VR that is not binary) leave the element out;
- a value of the wrong type inside ``Value`` is null: a number, bool, object or list
  among strings, anything but a number (or numeric string) among numbers, anything
  but an object (or a plain string) among person names, and anything but a tag among
  AT values; a sequence item that is not an object is an empty item (so items keep
  their positions: per-frame functional groups are matched to frames by position).

``BulkDataURI`` values are resolved through ``bulkdata_handler(tag, vr, uri)``;
without a handler, or when it returns None, the element is left out (not emptied),
so ``"RedPaletteColorLookupTableData" in ds`` says whether the data is really there.
A loader that fetches bulk data asynchronously can list what is needed first with
:func:`bulkdata_references` and pass a handler that looks the fetched bytes up.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset

from ..errors import ImageTooLargeError, MetadataError, ResponseFormatError
from ._values import element_value, to_string

__all__ = [
    "MAX_JSON_OBJECTS",
    "MAX_SEQUENCE_DEPTH",
    "BulkDataHandler",
    "bulkdata_references",
    "dataset_from_json",
    "load_json",
    "series_datasets",
    "transfer_syntax_of",
]

logger = logging.getLogger("imageloader.dicom")

BulkDataHandler = Callable[[str, str, str], bytes | None]
"""``handler(tag, vr, uri)`` → the element's bytes, or None to leave it out."""

_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "SV", "UV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
#: VRs whose values may not contain a backslash: a backslash there separates values.
_SPLIT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UI", "UC"})
_TEXT_VRS = _SPLIT_VRS | {"LT", "ST", "UR", "UT"}
#: VRs whose data is InlineBinary or a BulkDataURI, never a "Value" (PS3.18 F.2.7).
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_VRS = _INT_VRS | _FLOAT_VRS | _TEXT_VRS | _BINARY_VRS | {"AT", "PN", "SQ"}
_NAME_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
#: Sequences nested deeper than this are left out: each level costs Python stack (here
#: and in pydicom), and JSON nested a few hundred levels deep would exhaust it.
MAX_SEQUENCE_DEPTH = 64


def _dictionary_vrs(tag: str) -> tuple[str, ...]:
    """The VRs the data dictionary allows for ``tag`` ("US or SS": both); () if unknown."""
    try:
        vr = dictionary_VR(int(tag, 16))
    except (KeyError, ValueError):
        return ()
    return tuple(v for v in vr.split(" or ") if v in _VRS)


def _vr_of(tag: str, given: Any) -> str | None:
    """The VR to read the element with: the given one if the tag may have it."""
    allowed = _dictionary_vrs(tag)
    vr = given.strip().upper() if isinstance(given, str) else None
    if vr in _VRS and (not allowed or vr in allowed or vr == "UN"):
        return vr
    # Missing, unknown, or impossible for this tag (its values were written for
    # another type): the dictionary's VR, whose types the values are checked against.
    return allowed[0] if allowed else None


def _split(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if isinstance(value, str) and "\\" in value:
            out.extend(value.split("\\"))
        else:
            out.append(value)
    return out


def _number(value: Any, vr: str) -> Any:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            return None
    elif isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float
            return None
    else:
        return None
    if not math.isfinite(number):
        return None
    if vr in _FLOAT_VRS:
        return number
    if not number.is_integer():
        return None
    # An int sent as an int keeps every digit (a float has 53 bits of them).
    return value if isinstance(value, int) else int(number)


def _person_name(value: Any) -> dict[str, str] | None:
    """A PN value as ``{"Alphabetic": ...}`` (a plain string is the alphabetic group)."""
    if isinstance(value, str):
        return {"Alphabetic": value}
    if not isinstance(value, Mapping):
        return None
    groups = {g: value[g] for g in _NAME_GROUPS if isinstance(value.get(g), str)}
    return groups or None


def _tag_value(value: Any) -> str | None:
    """An AT value as 8 hex digits."""
    if isinstance(value, str):
        text = value.strip().upper()
        if len(text) == 8 and all(c in "0123456789ABCDEF" for c in text):
            return text
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFFFFFF:
        return f"{value:08X}"
    return None


def _values(vr: str, raw: Any, resolve: _Resolver, depth: int) -> list[Any] | None:
    """The element's values with every one of the type ``vr`` promises, or None if unreadable.

    Items of the wrong type become null (empty items for a sequence).
    """
    if isinstance(raw, list):
        values = raw
    elif vr in ("SQ", "PN") and isinstance(raw, Mapping):
        values = [raw]  # one item, or one name, not wrapped in a list
    elif isinstance(raw, (str, int, float)) and not isinstance(raw, bool) and vr != "SQ":
        values = [raw]  # one value, not wrapped in a list
    else:
        return None  # a bool, null or object where a list belongs
    if vr == "SQ":
        if depth >= MAX_SEQUENCE_DEPTH:
            raise _Unreadable(f"sequences nested more than {MAX_SEQUENCE_DEPTH} deep")
        return [
            _dataset_json(v, resolve, depth + 1) if isinstance(v, Mapping) else {} for v in values
        ]
    if vr == "PN":
        return [_person_name(v) for v in values]
    if vr in _INT_VRS or vr in _FLOAT_VRS:
        return [_number(v, vr) for v in _split(values)]
    if vr == "AT":
        return [_tag_value(v) for v in values]
    if vr in _TEXT_VRS:
        texts = [v if isinstance(v, str) else None for v in values]
        return _split(texts) if vr in _SPLIT_VRS else texts
    return None  # a binary VR: its data is InlineBinary or a BulkDataURI, not a "Value"


def _inline_binary(value: Any) -> str | None:
    """InlineBinary as base64 text pydicom can decode (as it does: line breaks and all)."""
    if not isinstance(value, str):
        return None
    try:
        base64.b64decode(value)
    except (binascii.Error, ValueError):  # bad padding, or not ASCII
        return None
    return value


class _Resolver:
    """Calls the bulk data handler and remembers the bytes for pydicom to pick up."""

    def __init__(self, handler: BulkDataHandler | None) -> None:
        self.handler = handler
        self.fetched: dict[str, bytes] = {}

    def resolve(self, tag: str, vr: str, uri: str) -> bool:
        if self.handler is None:
            return False
        data = self.handler(tag, vr, uri)
        if data is None:
            return False
        self.fetched[uri] = bytes(data)
        return True

    def __call__(self, tag: str, vr: str, uri: str) -> bytes:
        return self.fetched[uri]


class _Unreadable(Exception):
    """An element whose JSON types are wrong: it is left out (and logged)."""


def _element_json(tag: str, element: Any, resolve: _Resolver, depth: int) -> dict[str, Any] | None:
    """A normalised copy of one element, or None to leave it out (_Unreadable: malformed)."""
    if not isinstance(element, Mapping):
        raise _Unreadable("not a JSON object")
    vr = _vr_of(tag, element.get("vr"))
    if vr is None:
        raise _Unreadable("no VR")
    if "BulkDataURI" in element:
        uri = element["BulkDataURI"]
        if not isinstance(uri, str):
            raise _Unreadable("BulkDataURI is not a string")
        if not resolve.resolve(tag, vr, uri):
            return None
        return {"vr": vr, "BulkDataURI": uri}
    if "InlineBinary" in element:
        data = _inline_binary(element["InlineBinary"])
        if data is None or vr not in _BINARY_VRS:
            raise _Unreadable(f"InlineBinary that is not base64 data of a binary VR ({vr})")
        return {"vr": vr, "InlineBinary": data}
    raw = element.get("Value")
    if raw is None or raw == []:
        return {"vr": vr}
    values = _values(vr, raw, resolve, depth)
    if values is None:
        raise _Unreadable(f"a Value of type {type(raw).__name__} for VR {vr}")
    if vr != "SQ" and all(v is None for v in values):
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _dataset_json(obj: Mapping[str, Any], resolve: _Resolver, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, element in obj.items():
        tag = str(key).upper()
        if len(tag) != 8:
            continue
        try:
            int(tag, 16)
        except ValueError:
            continue
        try:
            normalised = _element_json(tag, element, resolve, depth)
        except _Unreadable as exc:
            logger.warning("DICOM JSON: dropped unreadable element %s: %s", tag, exc)
            continue
        if normalised is not None:
            out[tag] = normalised
    return out


def _build(normalised: dict[str, Any], resolve: _Resolver) -> Dataset:
    try:
        return Dataset.from_json(normalised, bulk_data_uri_handler=resolve)
    except Exception:
        pass
    # Element by element, so one unreadable attribute costs only itself.
    ds = Dataset()
    for tag, element in normalised.items():
        try:
            ds.update(Dataset.from_json({tag: element}, bulk_data_uri_handler=resolve))
        except Exception as exc:
            logger.warning("DICOM JSON: dropped unreadable element %s: %s", tag, exc)
    return ds


def dataset_from_json(
    obj: Mapping[str, Any] | str | bytes,
    *,
    bulkdata_handler: BulkDataHandler | None = None,
    image_id: str | None = None,
) -> Dataset:
    """One DICOM JSON dataset (a dict, or its JSON text) as a pydicom Dataset.

    File Meta elements (group 0002), when the server sends them, go to ``ds.file_meta``.
    Raises MetadataError when ``obj`` is not a JSON object.
    """
    if isinstance(obj, (str, bytes)):
        try:
            obj = json.loads(obj)
        except ValueError as exc:
            raise MetadataError(f"invalid DICOM JSON: {exc}", image_id=image_id) from exc
    if not isinstance(obj, Mapping):
        raise MetadataError("a DICOM JSON dataset must be a JSON object", image_id=image_id)
    resolve = _Resolver(bulkdata_handler)
    normalised = _dataset_json(obj, resolve)
    meta_json = {t: e for t, e in normalised.items() if t.startswith("0002")}
    body = {t: e for t, e in normalised.items() if not t.startswith("0002")}
    ds = _build(body, resolve)
    if meta_json:
        ds.file_meta = FileMetaDataset(_build(meta_json, resolve))
    return ds


def series_datasets(
    json_list: Iterable[Mapping[str, Any]] | str | bytes,
    *,
    bulkdata_handler: BulkDataHandler | None = None,
) -> list[Dataset]:
    """Every dataset of a series (or study) metadata response, in the order given."""
    items: Any = json_list
    if isinstance(json_list, (str, bytes)):
        try:
            items = json.loads(json_list)
        except ValueError as exc:
            raise MetadataError(f"invalid DICOM JSON: {exc}") from exc
    if not isinstance(items, list | tuple):
        if isinstance(items, Mapping) or not isinstance(items, Iterable):
            raise MetadataError("a DICOM JSON metadata response must be a JSON array")
        items = list(items)
    return [dataset_from_json(obj, bulkdata_handler=bulkdata_handler) for obj in items]


def bulkdata_references(obj: Mapping[str, Any], _depth: int = 0) -> Iterator[tuple[str, str, str]]:
    """Every ``(tag, vr, uri)`` of a BulkDataURI in a DICOM JSON dataset, nested ones too."""
    if _depth > MAX_SEQUENCE_DEPTH:
        return
    for key, element in obj.items():
        if not isinstance(element, Mapping):
            continue
        tag = str(key).upper()
        uri = element.get("BulkDataURI")
        if isinstance(uri, str):
            yield tag, str(_vr_of(tag, element.get("vr")) or "UN"), uri
        items = element.get("Value") if element.get("vr") == "SQ" else None
        for item in items if isinstance(items, list) else ():
            if isinstance(item, Mapping):
                yield from bulkdata_references(item, _depth + 1)


def transfer_syntax_of(ds: Dataset) -> str | None:
    """(0002,0010) when present, else (0008,3002) AvailableTransferSyntaxUID (Cornerstone)."""
    meta = getattr(ds, "file_meta", None)
    for source in (meta, ds):
        if source is None:
            continue
        uid = to_string(element_value(source, "TransferSyntaxUID"))
        if uid:
            return uid
    return to_string(element_value(ds, "AvailableTransferSyntaxUID"))


#: JSON objects one metadata response may hold. Each costs ~100 bytes parsed, so a
#: body of nothing but ``{}`` stays well under a gigabyte; a real series of 5,000
#: instances of ~150 elements holds ~750,000.
MAX_JSON_OBJECTS = 2_000_000


def load_json(body: bytes, *, image_id: str | None = None, url: str | None = None) -> Any:
    """Parse a DICOM JSON body (call it in a thread: it takes a while for megabytes).

    Refuses a body of more than :data:`MAX_JSON_OBJECTS` objects before parsing it,
    and keeps nothing of a failed parse: the error is raised ``from None``, since
    ``json``'s errors hold the whole document.
    """
    if body.count(b"{") > MAX_JSON_OBJECTS:
        raise ImageTooLargeError(
            f"metadata holds more than {MAX_JSON_OBJECTS} JSON objects", image_id=image_id
        )
    try:
        return json.loads(body)
    except ValueError as exc:
        reason = f"{exc.msg} at {exc.pos}" if isinstance(exc, json.JSONDecodeError) else "bad UTF-8"
    raise ResponseFormatError(f"not DICOM JSON: {reason}", image_id=image_id, url=url)
