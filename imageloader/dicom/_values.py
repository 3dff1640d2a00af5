"""Reading attribute values tolerantly, and the per-frame view of enhanced objects.

Cornerstone reads a frame of an enhanced multi-frame object through a combined
instance: the nested items of the frame's Per-frame Functional Groups override
those of the Shared Functional Groups, which override the top-level attributes.
:class:`FrameView` gives the same lookup without copying the dataset.

Values come back as plain Python numbers and strings; an absent, empty or
unreadable value is ``None`` (a broken optional attribute must not fail a load).
A value of the wrong type (a number where a sequence belongs: a Part 10 element with
a wrong explicit VR) is unreadable too. DICOM JSON is checked on the way in
(:mod:`.dicomjson`), so this is the second line, for datasets from anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

__all__ = ["FrameView", "decoder_syntax", "element_value", "frame_count", "sequence_items"]

_FUNCTIONAL_GROUPS = ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence")
_EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
#: Deflated, and encapsulated uncompressed: their frames are explicit VR little endian bytes.
_AS_EXPLICIT_LITTLE = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.1.98"})


def decoder_syntax(transfer_syntax_uid: str) -> str:
    """The transfer syntax of the frame bytes handed to a decoder."""
    return _EXPLICIT_LITTLE if transfer_syntax_uid in _AS_EXPLICIT_LITTLE else transfer_syntax_uid


def element_value(ds: Dataset, key: str | int) -> Any:
    """The value of ``key`` in ``ds`` (not nested), or None if absent, empty or unreadable."""
    try:
        if key not in ds:
            return None
        value = ds[key].value
    except Exception:
        # A raw element pydicom cannot convert (bad VR, bad length): treat as absent.
        return None
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, (list, MultiValue)) and len(value) == 0:
        return None
    return value


def sequence_items(value: Any) -> list[Dataset]:
    """The items of a sequence value; [] for a value that is not a sequence."""
    if isinstance(value, Dataset):
        return [value]
    if not isinstance(value, (Sequence, MultiValue, list, tuple)):
        return []
    return [item for item in value if isinstance(item, Dataset)]


def _items(ds: Dataset, keyword: str) -> list[Dataset]:
    return sequence_items(element_value(ds, keyword))


def _nested_layers(group_item: Dataset) -> list[Dataset]:
    """The first item of every sequence in a functional group item, last first."""
    layers: list[Dataset] = []
    for tag in list(group_item.keys()):
        try:
            elem = group_item[tag]
        except Exception:
            continue  # a raw element pydicom cannot convert: not a sequence we can read
        items = sequence_items(elem.value) if elem.VR == "SQ" else []
        # Items naming an instance are references (e.g. a previous value), not frame data.
        if items and "SOPInstanceUID" not in items[0]:
            layers.append(items[0])
    layers.reverse()
    return layers


def frame_count(ds: Dataset) -> int:
    """NumberOfFrames as an int (1 when absent, empty or zero); -1 when unreadable."""
    value = element_value(ds, "NumberOfFrames")
    if value is None:
        return 1
    try:
        count = int(str(value).strip())
    except ValueError:
        return -1
    return count if count > 0 else 1


class FrameView:
    """Attribute lookup for one frame: per-frame groups, then shared groups, then the root."""

    __slots__ = ("frame", "layers", "root")

    def __init__(self, ds: Dataset, frame: int = 1) -> None:
        self.root = ds
        self.frame = frame
        layers: list[Dataset] = []
        per_frame = _items(ds, _FUNCTIONAL_GROUPS[0])
        if 1 <= frame <= len(per_frame):
            layers.extend(_nested_layers(per_frame[frame - 1]))
        shared = _items(ds, _FUNCTIONAL_GROUPS[1])
        if shared:
            layers.extend(_nested_layers(shared[0]))
        layers.append(ds)
        self.layers = tuple(layers)

    @property
    def enhanced(self) -> bool:
        """Whether the object carries functional groups."""
        return len(self.layers) > 1 or any(k in self.root for k in _FUNCTIONAL_GROUPS)

    def value(self, keyword: str) -> Any:
        """The first non-empty value of ``keyword`` through the layers."""
        for layer in self.layers:
            value = element_value(layer, keyword)
            if value is not None:
                return value
        return None

    def root_value(self, keyword: str) -> Any:
        """The value at the top level only."""
        return element_value(self.root, keyword)

    def items(self, keyword: str) -> list[Dataset]:
        """The items of a sequence attribute found through the layers."""
        return sequence_items(self.value(keyword))

    # Typed accessors -------------------------------------------------------

    def string(self, keyword: str) -> str | None:
        """The value as one string (multiple values joined with a backslash)."""
        return to_string(self.value(keyword))

    def strings(self, keyword: str) -> tuple[str, ...] | None:
        """Every value as a string."""
        values = [to_string(v) for v in _as_list(self.value(keyword))]
        kept = tuple(v for v in values if v is not None)
        return kept or None

    def number(self, keyword: str) -> float | None:
        """The first value as a float."""
        values = _as_list(self.value(keyword))
        return to_float(values[0]) if values else None

    def integer(self, keyword: str) -> int | None:
        """The first value as an int."""
        values = _as_list(self.value(keyword))
        return to_int(values[0]) if values else None

    def numbers(self, keyword: str, minimum: int = 1) -> tuple[float, ...] | None:
        """Every value as a float; None if fewer than ``minimum`` or any is not a number."""
        return floats(self.value(keyword), minimum)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return list(value)
    if isinstance(value, str) and "\\" in value:
        return value.split("\\")
    return [value]


def floats(value: Any, minimum: int = 1) -> tuple[float, ...] | None:
    """Every value as a float; None if fewer than ``minimum`` or any is not a number."""
    values = [to_float(v) for v in _as_list(value)]
    if len(values) < minimum or any(v is None for v in values):
        return None
    return tuple(v for v in values if v is not None)


def to_float(value: Any) -> float | None:
    """A DS/IS/FL/FD/US... value (or numeric string) as a finite float."""
    if isinstance(value, bytes):
        return None
    try:
        number = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def to_int(value: Any) -> int | None:
    """An integer value (IS, US, or an integral float) as an int."""
    number = to_float(value)
    if number is None or not number.is_integer():
        return None
    return int(number)


def to_string(value: Any) -> str | None:
    """A value as a string; multiple values are joined with a backslash."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        parts = [to_string(v) for v in value]
        joined = "\\".join(p for p in parts if p is not None)
        return joined or None
    if isinstance(value, bytes):
        return None
    if isinstance(value, BaseTag):
        return f"{int(value):08X}"
    text = str(value).strip(" \x00")
    return text or None


def tags_as_strings(value: Any) -> Iterator[str]:
    """AT values as 8-digit upper-case hex strings (the DICOM JSON form)."""
    for item in _as_list(value):
        if isinstance(item, int):
            yield f"{int(item):08X}"
        elif isinstance(item, str) and item.strip():
            yield item.strip().upper()
