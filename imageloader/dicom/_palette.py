"""PALETTE COLOR lookup tables: descriptors and data, normal or segmented, as numpy arrays.

Follows Cornerstone's ``getImagePixelModule``: a first descriptor value of 0 means
65536 entries, and the bits per entry are taken from the length of the red LUT data
(as many bytes as entries: 8 bits, otherwise 16), correcting descriptors that claim 16
bits for 8-bit data or the reverse. Segmented LUTs (PS3.3 C.7.9.2) are expanded.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from ..decode.params import Palette
from ._values import element_value

__all__ = ["PaletteError", "read_descriptors", "read_palette"]

_COLOURS = ("Red", "Green", "Blue")
Table = npt.NDArray[np.unsignedinteger[Any]]


class PaletteError(ValueError):
    """The palette attributes are present but unusable."""


def _descriptor(ds: Dataset, colour: str) -> tuple[int, int, int] | None:
    value = element_value(ds, f"{colour}PaletteColorLookupTableDescriptor")
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, MultiValue)) else [value]
    if len(values) != 3:
        raise PaletteError(f"{colour} palette descriptor has {len(values)} values, not 3")
    try:
        entries, first, bits = (int(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise PaletteError(f"{colour} palette descriptor is not numeric: {values}") from exc
    # Read as SS when PixelRepresentation is 1: the entry count is unsigned regardless.
    entries &= 0xFFFF
    return (entries or 65536, first, bits)


def read_descriptors(ds: Dataset) -> tuple[tuple[int, int, int], ...] | None:
    """The three descriptors as they stand (0 entries read as 65536), or None if any is absent.

    Used when the LUT data is not at hand (DICOM JSON without its bulk data).
    """
    try:
        descriptors = [_descriptor(ds, c) for c in _COLOURS]
    except PaletteError:
        return None
    kept = tuple(d for d in descriptors if d is not None)
    return kept if len(kept) == 3 else None


def _words(data: Any, little_endian: bool) -> npt.NDArray[np.uint16]:
    """OW data (or a list of US values from DICOM JSON) as 16-bit words."""
    if isinstance(data, (list, MultiValue)):
        return np.asarray([int(v) for v in data], dtype=np.uint16)
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) % 2:
        raise PaletteError("palette LUT data is not a whole number of 16-bit words")
    return np.frombuffer(data, dtype="<u2" if little_endian else ">u2").astype(np.uint16)


def _lut_bytes(data: Any, little_endian: bool) -> npt.NDArray[np.uint8]:
    """8-bit LUT entries in order (OW data is word-swapped in big endian objects)."""
    if isinstance(data, (bytes, bytearray, memoryview)) and little_endian:
        return np.frombuffer(data, dtype=np.uint8)
    return _words(data, little_endian).astype("<u2").view(np.uint8)


def _data_length(data: Any) -> int:
    if isinstance(data, (list, MultiValue)):
        return 2 * len(data)
    return len(data)


def expand_segmented(
    data: npt.NDArray[Any], entries: int, *, eight_bit: bool = False
) -> npt.NDArray[np.int64]:
    """Expand segmented LUT data (discrete, linear and indirect segments).

    ``data`` holds the LUT's words (its bytes for an 8-bit LUT, ``eight_bit``).
    """
    words = [int(v) for v in data]
    out: list[int] = []
    # Indirect segments replay others, and segments may add nothing: bound the
    # segments read, or a few thousand empty ones replayed by a few thousand
    # indirect ones keep this loop busy for minutes.
    budget = len(words) + 4 * entries + 65536

    def run(start: int, max_segments: int | None, depth: int = 0) -> None:
        nonlocal budget
        if depth > 8:
            raise PaletteError("indirect segments nest too deeply in a segmented LUT")
        pos, done = start, 0
        # ``pos + 1`` tolerates a trailing padding word.
        while pos + 1 < len(words) and (max_segments is None or done < max_segments):
            budget -= 1
            if budget < 0:
                raise PaletteError("a segmented LUT replays too many segments")
            opcode, length = words[pos], words[pos + 1]
            pos += 2
            if opcode == 0:  # discrete: `length` values follow
                out.extend(words[pos : pos + length])
                pos += length
            elif opcode == 1:  # linear: ramp from the last value to the next word
                if not out or pos >= len(words):
                    raise PaletteError("invalid linear segment in a segmented LUT")
                y0, y1 = out[-1], words[pos]
                pos += 1
                if length:
                    ramp = np.around(np.linspace(y0 + (y1 - y0) / length, y1, length))
                    out.extend(int(v) for v in ramp)
            elif opcode == 2:  # indirect: replay `length` segments from an offset
                # The offset is 32 bits: two words, or four bytes in an 8-bit LUT.
                size = 4 if eight_bit else 2
                if not out or pos + size > len(words):
                    raise PaletteError("invalid indirect segment in a segmented LUT")
                shift = 8 if eight_bit else 16
                offset = sum(w << (shift * i) for i, w in enumerate(words[pos : pos + size]))
                pos += size
                run(offset, length, depth + 1)
            else:
                raise PaletteError(f"unknown segment type {opcode} in a segmented LUT")
            done += 1
            if len(out) > entries * 4 + 65536:
                raise PaletteError("segmented LUT expands far past its descriptor")

    run(0, None)
    return np.asarray(out[:entries], dtype=np.int64)


def _frozen(table: npt.NDArray[Any], dtype: type[np.unsignedinteger[Any]]) -> Table:
    out = cast(Table, np.ascontiguousarray(table, dtype=dtype))
    out.setflags(write=False)
    return out


def read_palette(ds: Dataset, *, little_endian: bool = True) -> Palette | None:
    """The palette of ``ds``, or None when it has no palette descriptors.

    Raises PaletteError when descriptors exist but the data is missing or broken.
    """
    descriptors = [_descriptor(ds, c) for c in _COLOURS]
    if descriptors[0] is None:
        return None
    if any(d is None for d in descriptors):
        raise PaletteError("palette descriptors are missing for some colours")
    red_desc = descriptors[0]
    entries = red_desc[0]
    normal = [element_value(ds, f"{c}PaletteColorLookupTableData") for c in _COLOURS]
    segmented = [element_value(ds, f"Segmented{c}PaletteColorLookupTableData") for c in _COLOURS]
    tables: list[npt.NDArray[Any]] = []
    if all(d is not None for d in normal):
        # Cornerstone: as many bytes as entries means 8 bits, whatever the descriptor says.
        bits = 8 if _data_length(normal[0]) == entries else 16
        for colour, data in zip(_COLOURS, normal, strict=True):
            plain: npt.NDArray[Any] = (
                _lut_bytes(data, little_endian) if bits == 8 else _words(data, little_endian)
            )
            if len(plain) < entries:
                raise PaletteError(f"{colour} LUT data has {len(plain)} of {entries} entries")
            tables.append(plain[:entries])
    elif all(d is not None for d in segmented):
        bits = red_desc[2] if red_desc[2] in (8, 16) else 16
        for colour, data in zip(_COLOURS, segmented, strict=True):
            source: npt.NDArray[Any] = (
                _lut_bytes(data, little_endian) if bits == 8 else _words(data, little_endian)
            )
            expanded = expand_segmented(source, entries, eight_bit=bits == 8)
            if len(expanded) < entries:
                raise PaletteError(
                    f"segmented {colour} LUT expands to {len(expanded)} of {entries}"
                )
            tables.append(expanded)
    else:
        raise PaletteError("PALETTE COLOR lookup table data is missing")
    dtype = np.uint8 if bits == 8 else np.uint16
    fixed = [(d[0], d[1], bits) for d in descriptors if d is not None]
    red, green, blue = (_frozen(t, dtype) for t in tables)
    return Palette(
        red_descriptor=fixed[0],
        green_descriptor=fixed[1],
        blue_descriptor=fixed[2],
        red=red,
        green=green,
        blue=blue,
    )
