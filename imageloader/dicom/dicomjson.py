"""DICOM JSON (QIDO-RS / WADO-RS metadata) → pydicom datasets, tolerant of real servers.

Servers bend the PS3.18 Annex F model: numbers sent as strings, several values in
one backslash-joined string (``"Value": ["50\\\\300"]``), person names as plain
strings, empty ``Value`` arrays, missing ``vr``, and no File Meta (Orthanc's series
metadata lacks (0002,0010)). :func:`dataset_from_json` normalises these before
``pydicom.Dataset.from_json`` and drops (with a log record) an element it still
cannot read, so one odd private attribute never fails a load.

``BulkDataURI`` values are resolved through ``bulkdata_handler(tag, vr, uri)``;
without a handler, or when it returns None, the element is left out (not emptied),
so ``"RedPaletteColorLookupTableData" in ds`` says whether the data is really there.
A loader that fetches bulk data asynchronously can list what is needed first with
:func:`bulkdata_references` and pass a handler that looks the fetched bytes up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset

from ..errors import MetadataError
from ._values import element_value, to_string

__all__ = [
    "BulkDataHandler",
    "bulkdata_references",
    "dataset_from_json",
    "series_datasets",
    "transfer_syntax_of",
]

logger = logging.getLogger("imageloader.dicom")

BulkDataHandler = Callable[[str, str, str], bytes | None]
"""``handler(tag, vr, uri)`` → the element's bytes, or None to leave it out."""

_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "SV", "UV", "US or SS"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
#: VRs whose values may not contain a backslash: a backslash there separates values.
_SPLIT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UI", "UC"})
_VALUE_KEYS = ("Value", "InlineBinary", "BulkDataURI")


def _vr_of(tag: str, given: Any) -> str | None:
    if isinstance(given, str) and len(given) == 2 and given.isalpha():
        return given.upper()
    try:
        vr = dictionary_VR(int(tag, 16))
    except (KeyError, ValueError):
        return None
    return vr.split(" or ")[0] if " or " in vr else vr


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
        number = float(value)
    else:
        return None
    if vr in _FLOAT_VRS:
        return number
    return int(number) if number.is_integer() else None


def _values(vr: str, raw: Any, resolve: _Resolver) -> list[Any] | None:
    values = list(raw) if isinstance(raw, list) else [raw]
    if vr == "SQ":
        return [_dataset_json(v, resolve) if isinstance(v, Mapping) else {} for v in values]
    if vr == "PN":
        return [{"Alphabetic": v} if isinstance(v, str) else v for v in values]
    if vr in _INT_VRS or vr in _FLOAT_VRS:
        numbers = [_number(v, vr) for v in _split(values)]
        return numbers if any(n is not None for n in numbers) else None
    if vr in _SPLIT_VRS:
        return _split(values)
    return values


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


def _element_json(tag: str, element: Any, resolve: _Resolver) -> dict[str, Any] | None:
    """A normalised copy of one element, or None to leave it out."""
    if not isinstance(element, Mapping):
        return None
    vr = _vr_of(tag, element.get("vr"))
    if vr is None:
        return None
    if "BulkDataURI" in element:
        uri = element["BulkDataURI"]
        if not isinstance(uri, str) or not resolve.resolve(tag, vr, uri):
            return None
        return {"vr": vr, "BulkDataURI": uri}
    if "InlineBinary" in element:
        return {"vr": vr, "InlineBinary": element["InlineBinary"]}
    raw = element.get("Value")
    if raw is None or raw == []:
        return {"vr": vr}
    if vr == "UN":
        return None  # UN must be binary; a "Value" cannot be interpreted
    values = _values(vr, raw, resolve)
    return {"vr": vr} if values is None else {"vr": vr, "Value": values}


def _dataset_json(obj: Mapping[str, Any], resolve: _Resolver) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, element in obj.items():
        tag = str(key).upper()
        if len(tag) != 8:
            continue
        try:
            int(tag, 16)
        except ValueError:
            continue
        normalised = _element_json(tag, element, resolve)
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


def bulkdata_references(obj: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """Every ``(tag, vr, uri)`` of a BulkDataURI in a DICOM JSON dataset, nested ones too."""
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
                yield from bulkdata_references(item)


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
