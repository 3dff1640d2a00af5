"""Mutations of real inputs: byte-level damage and structure-aware edits.

Random bytes rarely get past a parser's first check, so the seeds are real files
and codestreams, and most mutations know where the fields are:

- byte ops (:data:`byte_ops`): flip, set, insert garbage, delete, duplicate a run,
  truncate, append; positions lean to the head and the tail, where headers and
  end markers are;
- codestream header fields (:func:`header_fields`): JPEG/JPEG-LS frame and scan
  headers and segment lengths, JPEG 2000 SIZ/COD/SOT, the RLE segment table —
  overwritten with boundary values (dimensions, precision, component counts);
- DICOM elements (:class:`Part10Layout`): every top-level element's length field
  and value (boundary values for the pixel-module attributes), deleted,
  duplicated or reordered; deflated objects are edited inflated and re-deflated;
- encapsulated pixel data: item lengths, Basic Offset Table entries, the sequence
  delimiter, and "explode" (thousands of tiny fragments with a valid offset table);
- segmented palette LUTs: programs of discrete, linear and indirect segments, with
  repeats, as a hostile writer would make them.

Each op is plain data (tuples of ints and bytes), so Hypothesis shrinks them and a
failing case prints as a readable list.
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

Op = tuple[Any, ...]

BOUNDARY_INTS = (
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    12,
    15,
    16,
    17,
    31,
    32,
    33,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFE,
    0xFFFFFFFF,
)
interesting_ints = st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(0, 0xFFFFFFFF))

# A position: (where, n) resolved against the data's length when applied.
positions = st.tuples(st.sampled_from(["head", "head", "tail", "any"]), st.integers(0, 2**32))
garbage = st.one_of(
    st.binary(min_size=1, max_size=24),
    st.sampled_from(
        [b"\xff\xd9", b"\xff\xd8", b"\xff\x4f\xff\x51", b"\xfe\xff\x00\xe0", b"\x00" * 8]
    ),
)
byte_ops = st.one_of(
    st.tuples(st.just("flip"), positions, st.integers(1, 255)),
    st.tuples(st.just("set"), positions, st.integers(0, 255)),
    st.tuples(st.just("insert"), positions, garbage),
    st.tuples(st.just("delete"), positions, st.integers(1, 64)),
    st.tuples(st.just("repeat"), positions, st.integers(1, 32), st.integers(2, 64)),
    st.tuples(st.just("truncate"), positions),
    st.tuples(st.just("append"), garbage),
)


def _resolve(position: tuple[str, int], size: int, head: int = 512, tail: int = 64) -> int:
    where, n = position
    if size == 0:
        return 0
    if where == "head":
        return n % min(size + 1, head)
    if where == "tail":
        return max(0, size - n % min(size + 1, tail))
    return n % (size + 1)


def apply_byte_ops(data: bytes, ops: Sequence[Op], *, head: int = 512) -> bytes:
    """``data`` with every byte op applied in turn (``head``: bytes that "head" positions hit)."""
    out = bytearray(data)
    for op in ops:
        kind = op[0]
        if kind == "append":
            out += op[1]
            continue
        at = _resolve(op[1], len(out), head)
        if kind == "flip" and at < len(out):
            out[at] ^= op[2]
        elif kind == "set" and at < len(out):
            out[at] = op[2]
        elif kind == "insert":
            out[at:at] = op[2]
        elif kind == "delete":
            del out[at : at + op[2]]
        elif kind == "repeat":
            out[at:at] = bytes(out[at : at + op[2]]) * (op[3] - 1)
        elif kind == "truncate":
            del out[at:]
    return bytes(out)


def write_field(data: bytearray, offset: int, width: int, value: int, *, big: bool) -> None:
    """Store ``value`` (masked to ``width`` bytes) at ``offset``, if it fits."""
    if offset + width <= len(data):
        data[offset : offset + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(
            width, "big" if big else "little"
        )


# -- codestream headers ----------------------------------------------------------------

# JPEG markers with no length: SOI, EOI, RSTn, TEM.
_STANDALONE = frozenset({0xD8, 0xD9, 0x01, *range(0xD0, 0xD8)})


def _jpeg_fields(data: bytes) -> list[tuple[int, int]]:
    fields: list[tuple[int, int]] = []
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF and len(fields) < 200:
        marker = data[at + 1]
        if marker in _STANDALONE or marker == 0xFF:
            at += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        fields.append((at + 2, 2))  # the segment length
        body = at + 4
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xF7):
            fields += [(body, 1), (body + 1, 2), (body + 3, 2), (body + 5, 1)]
            fields += [(body + 6 + i, 1) for i in range(min(length - 8, 12))]
        elif marker in (0xDA, 0xDD, 0xF8):  # SOS, DRI, JPEG-LS LSE
            fields += [(body + i, 1) for i in range(min(length - 2, 12))]
        elif marker in (0xC4, 0xDB):  # DHT, DQT: class/id and the first counts
            fields += [(body + i, 1) for i in range(min(length - 2, 6))]
        if marker == 0xDA:
            break  # entropy-coded data follows
        at = body + length - 2
    return fields


def _j2k_fields(data: bytes) -> list[tuple[int, int]]:
    start = data.find(b"\xff\x4f\xff\x51")
    if start < 0:
        return []
    siz = start + 4
    fields = [(siz, 2), (siz + 2, 2)] + [(siz + 4 + 4 * i, 4) for i in range(8)]
    fields.append((siz + 36, 2))  # Csiz
    components = int.from_bytes(data[siz + 36 : siz + 38], "big")
    fields += [(siz + 38 + i, 1) for i in range(min(3 * components, 12))]
    at = siz + int.from_bytes(data[siz : siz + 2], "big")
    while at + 4 <= len(data) and data[at] == 0xFF and len(fields) < 200:
        marker = data[at + 1]
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        fields.append((at + 2, 2))
        fields += [(at + 4 + i, 1) for i in range(min(length - 2, 12))]
        if marker == 0x90:  # SOT: Isot, Psot; the tile data follows
            fields += [(at + 4, 2), (at + 6, 4)]
            break
        at += 2 + length
    return fields


def header_fields(family: str, data: bytes) -> list[tuple[int, int]]:
    """``(offset, width)`` of the fields a codestream's headers hold (big endian, except RLE)."""
    if family in ("jpeg", "jpeg-lossless", "jpeg-ls"):
        return _jpeg_fields(data)
    if family in ("jpeg2000", "htj2k"):
        return _j2k_fields(data)
    if family == "rle":
        return [(4 * i, 4) for i in range(16)]
    return []


field_ops = st.tuples(st.just("field"), st.integers(0, 2**16), interesting_ints, st.integers(-2, 2))


def apply_field_ops(
    data: bytes, fields: list[tuple[int, int]], ops: Sequence[Op], big: bool
) -> bytes:
    """Overwrite header fields: ``("field", index, value, delta)``.

    ``delta`` nudges the current value instead when ``value`` is 0 (one off is the
    commonest header lie).
    """
    if not fields:
        return data
    out = bytearray(data)
    for _, index, value, delta in ops:
        offset, width = fields[index % len(fields)]
        if value == 0 and delta:
            order = "big" if big else "little"
            value = int.from_bytes(out[offset : offset + width], order) + delta
        write_field(out, offset, width, value, big=big)
    return bytes(out)


# -- DICOM Part 10 -----------------------------------------------------------------------

_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)


@dataclass(frozen=True)
class Element:
    """One top-level element: where its length field is, and its bytes."""

    tag: int
    vr: str
    header: bytes
    value: bytes
    length_at: int  # offset of the length field in ``header``
    length_width: int


@dataclass(frozen=True)
class Part10Layout:
    """A Part 10 object as prefix (preamble, meta) + top-level elements (+ deflate flag)."""

    prefix: bytes
    meta: tuple[Element, ...]
    elements: tuple[Element, ...]
    little: bool
    deflated: bool

    def serialize(
        self, meta: Sequence[Element], elements: Sequence[Element], zeros: int = 0
    ) -> bytes:
        """The object's bytes; ``zeros`` MB of a private OB element of zeros go first
        in the (deflated) dataset: a deflate bomb, compressed without being held."""
        body = b"".join(e.header + e.value for e in elements)
        if self.deflated:
            packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
            chunks = []
            if zeros:
                size = zeros << 20
                chunks.append(packer.compress(struct.pack("<HH2sHL", 9, 0x10, b"OB", 0, size)))
                block = bytes(1 << 20)
                chunks += [packer.compress(block) for _ in range(zeros)]
            chunks += [packer.compress(body), packer.flush()]
            body = b"".join(chunks)
        return self.prefix + b"".join(e.header + e.value for e in meta) + body


def _elements(data: bytes, implicit: bool, little: bool, meta: bool) -> tuple[list[Element], int]:
    """The top-level elements at the start of ``data``, and where they end."""
    from pydicom.datadict import dictionary_VR
    from pydicom.filereader import data_element_generator

    def not_meta(tag: Any, vr: Any, length: int) -> bool:
        return bool(tag.group != 2)

    fp = io.BytesIO(data)
    out: list[Element] = []
    start = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        elements = data_element_generator(
            fp, implicit, little, stop_when=not_meta if meta else None
        )
        for element in elements:
            end = fp.tell()
            vr = str(element.VR or "UN")
            short = not implicit and vr not in _LONG_VRS
            header_size = 8 if implicit or short else 12
            value_start = start + header_size  # (undefined-length sequences have no value_tell)
            if implicit:
                try:
                    vr = dictionary_VR(element.tag).split(" or ")[0]
                except KeyError:
                    vr = "UN"
            out.append(
                Element(
                    tag=int(element.tag),
                    vr=vr,
                    header=data[start:value_start],
                    value=data[value_start:end],
                    length_at=6 if short else header_size - 4,
                    length_width=2 if short else 4,
                )
            )
            start = end
    return out, start


@functools.cache
def layout_of(data: bytes) -> Part10Layout | None:
    """The element layout of a Part 10 object with a preamble (None if it has no such form)."""
    if data[128:132] != b"DICM":
        return None
    try:
        meta, meta_size = _elements(data[132:], implicit=False, little=True, meta=True)
        meta_end = 132 + meta_size
        syntax = next((e.value.rstrip(b"\x00 ").decode() for e in meta if e.tag == 0x00020010), "")
        body = data[meta_end:]
        deflated = syntax == "1.2.840.10008.1.2.1.99"
        if deflated:
            body = zlib.decompress(body, -zlib.MAX_WBITS)
        implicit = syntax == "1.2.840.10008.1.2"
        little = syntax != "1.2.840.10008.1.2.2"
        elements, size = _elements(body, implicit=implicit, little=little, meta=False)
    except Exception:
        return None
    if size != len(body):
        return None
    return Part10Layout(data[:132], tuple(meta), tuple(elements), little, deflated)


def _pack_numbers(vr: str, values: Sequence[int], little: bool) -> bytes:
    codes = {"US": "H", "SS": "h", "UL": "L", "SL": "l"}
    code = codes.get(vr)
    if code is None:
        return "\\".join(str(v) for v in values).encode()
    masked = [v & 0xFFFF if code in "Hh" else v & 0xFFFFFFFF for v in values]
    signed = code in "hl"
    bits = 16 if code in "Hh" else 32
    fixed = [v - (1 << bits) if signed and v >= 1 << (bits - 1) else v for v in masked]
    return struct.pack(("<" if little else ">") + code * len(fixed), *fixed)


_TEXT_NUMBERS = [
    b"0",
    b"1",
    b"-1",
    b"2",
    b"65536",
    b"2147483647",
    b"99999999999",
    b"1e309",
    b"nan",
    b"-0",
    b"1A",
    b"",
    b" ",
    b"\x00",
    b"3\\4",
    b"1.5",
    b"inf",
]
_PHOTOMETRIC = [
    b"MONOCHROME1",
    b"MONOCHROME2",
    b"RGB",
    b"YBR_FULL",
    b"YBR_FULL_422",
    b"YBR_RCT",
    b"YBR_ICT",
    b"PALETTE COLOR",
    b"YBR_PARTIAL_420",
    b"HSV",
    b"",
    b"RGB\\RGB",
]
_SYNTAXES = [
    b"1.2.840.10008.1.2",
    b"1.2.840.10008.1.2.1",
    b"1.2.840.10008.1.2.2",
    b"1.2.840.10008.1.2.1.99",
    b"1.2.840.10008.1.2.5",
    b"1.2.840.10008.1.2.4.50",
    b"1.2.840.10008.1.2.4.70",
    b"1.2.840.10008.1.2.4.80",
    b"1.2.840.10008.1.2.4.90",
    b"1.2.840.10008.1.2.4.201",
    b"1.2.840.10008.1.2.1.98",
    b"1.2.3",
    b"",
]

#: Tags whose values decide how pixel data is cut and decoded.
PIXEL_TAGS = {
    0x00280002: "SamplesPerPixel",
    0x00280004: "PhotometricInterpretation",
    0x00280006: "PlanarConfiguration",
    0x00280008: "NumberOfFrames",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280100: "BitsAllocated",
    0x00280101: "BitsStored",
    0x00280102: "HighBit",
    0x00280103: "PixelRepresentation",
    0x00281052: "RescaleIntercept",
    0x00281053: "RescaleSlope",
    0x00281101: "RedPaletteColorLookupTableDescriptor",
    0x00281102: "GreenPaletteColorLookupTableDescriptor",
    0x00281103: "BluePaletteColorLookupTableDescriptor",
    0x00020010: "TransferSyntaxUID",
    0x00080060: "Modality",
}


@st.composite
def element_values(draw: st.DrawFn, element: Element, little: bool) -> bytes:
    """A new value for ``element``: boundary values of its kind, or any bytes."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=16))
    if element.tag == 0x00280004:
        return draw(st.sampled_from(_PHOTOMETRIC))
    if element.tag == 0x00020010:
        return draw(st.sampled_from(_SYNTAXES)) + b"\x00"
    if element.vr in ("US", "SS", "UL", "SL"):
        count = draw(st.integers(0, 4))
        return _pack_numbers(
            element.vr, draw(st.lists(interesting_ints, min_size=count, max_size=count)), little
        )
    if element.vr in ("IS", "DS"):
        return draw(st.sampled_from(_TEXT_NUMBERS))
    return draw(st.one_of(st.binary(max_size=8), st.just(element.value[: len(element.value) // 2])))


def _with_value(element: Element, value: bytes, little: bool) -> Element:
    if len(value) % 2:
        value += b" " if element.vr not in ("OB", "UN", "US", "SS", "UL", "SL") else b"\x00"
    header = bytearray(element.header)
    undefined = (
        int.from_bytes(
            header[element.length_at : element.length_at + element.length_width],
            "little" if little else "big",
        )
        == (1 << (8 * element.length_width)) - 1
    )
    if not undefined:
        write_field(header, element.length_at, element.length_width, len(value), big=not little)
    return Element(
        element.tag, element.vr, bytes(header), value, element.length_at, element.length_width
    )


def _with_length(element: Element, length: int, little: bool) -> Element:
    header = bytearray(element.header)
    write_field(header, element.length_at, element.length_width, length, big=not little)
    return Element(
        element.tag,
        element.vr,
        bytes(header),
        element.value,
        element.length_at,
        element.length_width,
    )


@st.composite
def dicom_ops(draw: st.DrawFn, layout: Part10Layout) -> list[Op]:
    """Structure-aware edits of ``layout`` (resolved by :func:`apply_dicom_ops`)."""
    count = len(layout.elements)
    pixel_indexes = [i for i, e in enumerate(layout.elements) if e.tag in PIXEL_TAGS]
    meta_indexes = [i for i, e in enumerate(layout.meta) if e.tag in PIXEL_TAGS]
    ops: list[Op] = []
    kinds = ["value", "value", "value", "meta", "length", "delete", "duplicate", "swap"]
    if any(e.tag == 0x7FE00010 and e.header.endswith(b"\xff" * 4) for e in layout.elements):
        kinds += ["pixels"] * 4  # encapsulated
    if any(e.tag in (0x00281221, 0x00281101) for e in layout.elements):
        kinds += ["palette"] * 4
    if layout.deflated:
        kinds += ["zeros"] * 2
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(kinds))
        if kind == "value" and pixel_indexes:
            index = draw(st.sampled_from(pixel_indexes))
            ops.append(
                ("value", index, draw(element_values(layout.elements[index], layout.little)))
            )
        elif kind == "meta" and meta_indexes:
            index = draw(st.sampled_from(meta_indexes))
            ops.append(("meta", index, draw(element_values(layout.meta[index], True))))
        elif kind == "length":
            ops.append(("length", draw(st.integers(0, count - 1)), draw(interesting_ints)))
        elif kind in ("delete", "duplicate"):
            ops.append((kind, draw(st.integers(0, count - 1))))
        elif kind == "swap":
            ops.append(("swap", draw(st.integers(0, count - 1)), draw(st.integers(0, count - 1))))
        elif kind == "pixels":
            ops.append(draw(pixel_ops))
        elif kind == "palette":
            ops.append(("palette", draw(segmented_luts())))
        elif kind == "zeros":  # MB of zeros in a deflated dataset
            ops.append(("zeros", draw(st.sampled_from([1, 8, 80, 600]))))
    return ops


# Encapsulated pixel data: ("item", index, length) | ("bot", index, value) |
# ("no delimiter",) | ("explode", fragments, with offset table)
pixel_ops = st.one_of(
    st.tuples(st.just("item"), st.integers(0, 64), interesting_ints),
    st.tuples(st.just("bot"), st.integers(0, 64), interesting_ints),
    st.tuples(st.just("no delimiter")),
    st.tuples(
        st.just("explode"),
        st.one_of(st.integers(2, 100), st.integers(20_000, 80_000)),
        st.booleans(),
    ),
)


def _items(value: bytes, little: bool) -> list[tuple[int, int]]:
    """``(offset of the item tag, length)`` of each item in encapsulated pixel data."""
    order = "<" if little else ">"
    items, at = [], 0
    while at + 8 <= len(value) and len(items) < 10_000:
        group, elem, length = struct.unpack_from(f"{order}HHL", value, at)
        if group != 0xFFFE or elem != 0xE000 or length == 0xFFFFFFFF:
            break
        items.append((at, length))
        at += 8 + length
    return items


def _edit_pixels(value: bytes, op: Op, little: bool) -> bytes:
    order = "<" if little else ">"
    items = _items(value, little)
    out = bytearray(value)
    if op[0] == "item" and items:
        at, _ = items[op[1] % len(items)]
        write_field(out, at + 4, 4, op[2], big=not little)
    elif op[0] == "bot" and items and items[0][1] >= 4:
        entries = items[0][1] // 4
        write_field(out, 8 + 4 * (op[1] % entries), 4, op[2], big=not little)
    elif op[0] == "no delimiter" and out.endswith(struct.pack(f"{order}HHL", 0xFFFE, 0xE0DD, 0)):
        del out[-8:]
    elif op[0] == "explode" and len(items) >= 2:
        # Many tiny fragments, each ending in FF D9, and (optionally) a valid offset table.
        count, with_table = op[1], op[2]
        fragment = struct.pack(f"{order}HHL", 0xFFFE, 0xE000, 2) + b"\xff\xd9"
        table = struct.pack(f"{order}{count}L", *range(0, 10 * count, 10)) if with_table else b""
        head = struct.pack(f"{order}HHL", 0xFFFE, 0xE000, len(table)) + table
        return head + fragment * count + struct.pack(f"{order}HHL", 0xFFFE, 0xE0DD, 0)
    return bytes(out)


Program = tuple[tuple[tuple[int, ...], int], ...]


@st.composite
def segmented_luts(draw: st.DrawFn) -> Program:
    """A segmented LUT as ``((segment words, repeat), ...)``: discrete, linear, indirect.

    A repeat count turns a short program into the long ones (thousands of indirect
    segments replaying thousands of empty ones) that only a hostile writer makes.
    """
    program: list[tuple[tuple[int, ...], int]] = [((0, 1, draw(st.integers(0, 0xFFFF))), 1)]
    for _ in range(draw(st.integers(1, 5))):
        opcode = draw(st.sampled_from([0, 1, 2, 2, 3]))
        length = draw(st.sampled_from([0, 1, 2, 255, 4096, 0xFFFF]))
        segment: tuple[int, ...]
        if opcode == 0:
            segment = (0, length, *draw(st.lists(st.integers(0, 0xFFFF), max_size=4)))
        elif opcode == 1:
            segment = (1, length, draw(st.integers(0, 0xFFFF)))
        elif opcode == 2:
            offset = draw(st.integers(0, 20_000))
            segment = (2, length, offset & 0xFFFF, offset >> 16)
        else:
            segment = (draw(st.integers(3, 0xFFFF)), length)
        program.append((segment, draw(st.sampled_from([1, 1, 2, 100, 1000, 4000]))))
    return tuple(program)


def lut_words(program: Program) -> list[int]:
    """The words a program stands for."""
    return [word for segment, repeat in program for _ in range(repeat) for word in segment]


def _palette(elements: list[Element], program: Program, little: bool) -> list[Element]:
    words = lut_words(program)
    data = struct.pack(f"{'<' if little else '>'}{len(words)}H", *words)
    segmented = {0x00281221, 0x00281222, 0x00281223}
    return [_with_value(e, data, little) if e.tag in segmented else e for e in elements]


def apply_dicom_ops(layout: Part10Layout, ops: Sequence[Op]) -> bytes:
    """The object with ``ops`` (from :func:`dicom_ops`) applied."""
    meta = list(layout.meta)
    elements = list(layout.elements)
    little = layout.little
    zeros = 0
    for op in ops:
        kind = op[0]
        if kind == "zeros":
            zeros += op[1] if layout.deflated else 0
            continue
        if not elements:
            break
        if kind == "value":
            index = op[1] % len(elements)
            elements[index] = _with_value(elements[index], op[2], little)
        elif kind == "meta" and meta:
            index = op[1] % len(meta)
            meta[index] = _with_value(meta[index], op[2], True)
        elif kind == "length":
            index = op[1] % len(elements)
            elements[index] = _with_length(elements[index], op[2], little)
        elif kind == "delete":
            del elements[op[1] % len(elements)]
        elif kind == "duplicate":
            index = op[1] % len(elements)
            elements.insert(index, elements[index])
        elif kind == "swap":
            i, j = op[1] % len(elements), op[2] % len(elements)
            elements[i], elements[j] = elements[j], elements[i]
        elif kind in ("item", "bot", "no delimiter", "explode"):
            for index, element in enumerate(elements):
                if element.tag == 0x7FE00010 and element.header.endswith(b"\xff\xff\xff\xff"):
                    edited = _edit_pixels(element.value, op, little)
                    elements[index] = Element(
                        element.tag,
                        element.vr,
                        element.header,
                        edited,
                        element.length_at,
                        element.length_width,
                    )
        elif kind == "palette":
            elements = _palette(elements, op[1], little)
    return layout.serialize(meta, elements, zeros)
