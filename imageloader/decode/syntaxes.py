"""Transfer syntaxes and the codestreams they carry.

:data:`SYNTAXES` maps every transfer syntax imageloader decodes to its
:class:`Family` (which codecs can read it) and byte order. :func:`sniff` and
:func:`read_header` look at a codestream's first bytes without decoding it: the
magic number tells a JPEG from a JPEG 2000 stream (servers such as Orthanc label
HTJ2K frames as uncompressed), and the frame header gives the size the codestream
claims, so a decompression bomb is refused before a codec allocates anything.
:attr:`CodestreamInfo.decode_bytes` is what decoding it will cost in memory (the
decoded samples, and JPEG 2000's per-tile bookkeeping); :func:`header_problem`
refuses headers that break the structure a codec relies on.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, replace

__all__ = [
    "SYNTAXES",
    "CodestreamInfo",
    "Family",
    "TransferSyntax",
    "dnl_height",
    "has_end_marker",
    "header_problem",
    "jpeg_is_ycbcr",
    "markers_say_ycbcr",
    "read_header",
    "rle_segment_count",
    "sample_bytes",
    "sniff",
]


class Family(enum.StrEnum):
    """Kinds of pixel encoding; a codec declares the families it reads."""

    NATIVE = "native"
    RLE = "rle"
    JPEG = "jpeg"  # DCT processes: baseline, extended, spectral selection, progressive
    JPEG_LOSSLESS = "jpeg-lossless"  # process 14
    JPEG_LS = "jpeg-ls"
    JPEG2000 = "jpeg2000"
    HTJ2K = "htj2k"


@dataclass(frozen=True, slots=True)
class TransferSyntax:
    """One transfer syntax: its UID, name, family and byte order."""

    uid: str
    name: str
    family: Family
    big_endian: bool = False

    @property
    def encapsulated(self) -> bool:
        """Whether frames are codestreams (not raw samples)."""
        return self.family is not Family.NATIVE


def _table(*rows: tuple[str, str, Family]) -> dict[str, TransferSyntax]:
    return {uid: TransferSyntax(uid, name, family) for uid, name, family in rows}


SYNTAXES: dict[str, TransferSyntax] = {
    **_table(
        ("1.2.840.10008.1.2", "Implicit VR Little Endian", Family.NATIVE),
        ("1.2.840.10008.1.2.1", "Explicit VR Little Endian", Family.NATIVE),
        # Frames of a deflated object arrive inflated: plain explicit little endian.
        ("1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian", Family.NATIVE),
        ("1.2.840.10008.1.2.5", "RLE Lossless", Family.RLE),
        ("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)", Family.JPEG),
        ("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)", Family.JPEG),
        ("1.2.840.10008.1.2.4.53", "JPEG Spectral Selection (Process 6 & 8)", Family.JPEG),
        ("1.2.840.10008.1.2.4.55", "JPEG Full Progression (Process 10 & 12)", Family.JPEG),
        ("1.2.840.10008.1.2.4.57", "JPEG Lossless (Process 14)", Family.JPEG_LOSSLESS),
        ("1.2.840.10008.1.2.4.70", "JPEG Lossless SV1 (Process 14)", Family.JPEG_LOSSLESS),
        ("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless", Family.JPEG_LS),
        ("1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless", Family.JPEG_LS),
        ("1.2.840.10008.1.2.4.90", "JPEG 2000 Lossless", Family.JPEG2000),
        ("1.2.840.10008.1.2.4.91", "JPEG 2000", Family.JPEG2000),
        ("1.2.840.10008.1.2.4.201", "HTJ2K Lossless", Family.HTJ2K),
        ("1.2.840.10008.1.2.4.202", "HTJ2K Lossless RPCL", Family.HTJ2K),
        ("1.2.840.10008.1.2.4.203", "HTJ2K", Family.HTJ2K),
        # The private UID Cornerstone also accepts for HTJ2K (pre-standard).
        ("3.2.840.10008.1.2.4.96", "HTJ2K (private)", Family.HTJ2K),
    ),
    "1.2.840.10008.1.2.2": TransferSyntax(
        "1.2.840.10008.1.2.2", "Explicit VR Big Endian", Family.NATIVE, big_endian=True
    ),
}


def sample_bytes(bits: int) -> int:
    """Bytes a decoder gives each sample of ``bits`` bits: 1, 2 or 4."""
    return 1 if bits <= 8 else 2 if bits <= 16 else 4


#: OpenJPEG's bookkeeping for each tile of a JPEG 2000 codestream, allocated for every
#: tile when it reads the main header, before any pixel: ~8 KiB, plus ~1.5 KiB per
#: component (measured with OpenJPEG 2.5 in imagecodecs 2026.3: 65,535 tiles of one
#: pixel, 1 component, 620 MiB; 3 components, 756 MiB; 4, 824 MiB).
J2K_TILE_BYTES = 8 << 10
J2K_TILE_COMPONENT_BYTES = 1536


@dataclass(frozen=True, slots=True)
class CodestreamInfo:
    """What a codestream's main header says, read without decoding.

    ``precision`` is bits per sample (of the first component); ``signed`` is known
    only for JPEG 2000. The JPEG fields say whether the decoder would take the
    samples for YCbCr: ``adobe_transform`` (APP14, None if absent), ``jfif`` (APP0)
    and the component identifiers. ``max_precision`` is the widest component's
    precision (JPEG 2000 components may differ; 0: ``precision``); ``tiles`` and
    ``levels`` (wavelet decomposition levels, the most any COD or COC segment of the
    main header asks for) are JPEG 2000's.
    """

    family: Family
    rows: int
    columns: int
    components: int
    precision: int
    signed: bool | None = None
    adobe_transform: int | None = None
    jfif: bool = False
    component_ids: tuple[int, ...] = ()
    max_precision: int = 0
    tiles: int = 1
    levels: int = 0

    @property
    def bits(self) -> int:
        """The widest component's bits per sample."""
        return max(self.precision, self.max_precision)

    @property
    def frame_bytes(self) -> int:
        """Bytes of the decoded frame: rows × columns × components × bytes per sample."""
        return max(self.rows, 0) * max(self.columns, 0) * self.components * sample_bytes(self.bits)

    @property
    def decode_bytes(self) -> int:
        """The least a decoder allocates for this frame: the decoded samples, and for
        JPEG 2000 OpenJPEG's bookkeeping for each tile after the first (see
        :data:`J2K_TILE_BYTES`; one tile's is lost in the decoder's other overheads)."""
        if self.family not in (Family.JPEG2000, Family.HTJ2K):
            return self.frame_bytes
        per_tile = J2K_TILE_BYTES + J2K_TILE_COMPONENT_BYTES * self.components
        return self.frame_bytes + max(self.tiles - 1, 0) * per_tile


_SOC_SIZ = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
# SOF markers: C0-C3, C5-C7, C9-CB, CD-CF (C4 DHT, C8 JPG, CC DAC are not); F7 is JPEG-LS.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}
_LOSSLESS_SOF = frozenset({0xC3, 0xC7, 0xCB, 0xCF})


def sniff(data: bytes | bytearray | memoryview) -> Family | None:
    """The family a codestream belongs to, by its magic bytes (None: not a codestream)."""
    head = bytes(data[:4])
    if head == _SOC_SIZ or bytes(data[:12]) == _JP2_SIGNATURE:
        info = _read_j2k(data)
        return info.family if info is not None else Family.JPEG2000
    if head[:2] == b"\xff\xd8":
        jpeg = _read_jpeg(data)
        return jpeg.family if jpeg is not None else Family.JPEG
    return None


def read_header(data: bytes | bytearray | memoryview, family: Family) -> CodestreamInfo | None:
    """The frame header of a JPEG, JPEG-LS or JPEG 2000 codestream (None: not parsable).

    Reads only the main header (a few hundred bytes); never raises.
    """
    if family in (Family.JPEG, Family.JPEG_LOSSLESS, Family.JPEG_LS):
        return _read_jpeg(data)
    if family in (Family.JPEG2000, Family.HTJ2K):
        return _read_j2k(data)
    return None


def has_end_marker(data: bytes | bytearray | memoryview) -> bool:
    """Whether a JPEG-family or JPEG 2000 codestream ends with its end marker (FF D9).

    Decoders fill a truncated frame with grey and report success, so a missing EOI
    (or EOC) is the one cheap sign of truncation. Trailing 00 or FF bytes are
    padding that some writers add to reach an even length.
    """
    buf = memoryview(data).cast("B")
    end = len(buf)
    while end > 0 and buf[end - 1] in (0x00, 0xFF):
        end -= 1
    return end >= 2 and buf[end - 2] == 0xFF and buf[end - 1] == 0xD9


_DNL = b"\xff\xdc\x00\x04"


def dnl_height(data: bytes | bytearray | memoryview) -> int | None:
    """The height a JPEG's DNL marker gives (for a frame header of 0 rows), or None.

    FF DC cannot occur in entropy-coded data (an FF there is followed by 00 or a
    restart marker), so the first one is the marker.
    """
    buf = bytes(data)
    at = buf.find(_DNL)
    if at < 0 or at + 6 > len(buf):
        return None
    return int.from_bytes(buf[at + 4 : at + 6], "big")


def markers_say_ycbcr(info: CodestreamInfo) -> bool | None:
    """libjpeg's reading of a JPEG's colour markers; None when there is none to go by.

    Adobe APP14 transform, then a JFIF APP0 (always YCbCr), then component ids
    'R', 'G', 'B'.
    """
    if info.adobe_transform is not None:
        return info.adobe_transform != 0
    if info.jfif:
        return True
    if info.component_ids == (0x52, 0x47, 0x42):
        return False
    return None


def jpeg_is_ycbcr(info: CodestreamInfo | None, photometric: str, samples: int) -> bool:
    """Whether a 3-component JPEG holds YCbCr that the decoder should convert to RGB.

    The markers decide as in libjpeg, except that with no marker at all the DICOM
    header does: photometric RGB means the samples were stored untransformed
    (libjpeg would guess YCbCr and get the colours wrong). Lossless processes never
    transform colour.
    """
    if samples != 3 or info is None or info.family is not Family.JPEG:
        return False
    said = markers_say_ycbcr(info)
    return said if said is not None else photometric != "RGB"


def _u16(buf: memoryview, at: int) -> int:
    return (buf[at] << 8) | buf[at + 1]


def _u32(buf: memoryview, at: int) -> int:
    return (_u16(buf, at) << 16) | _u16(buf, at + 2)


class _Malformed(Exception):
    """A JPEG's marker segments do not follow one another (the reason is the message)."""


def _jpeg_segments(buf: memoryview) -> Iterator[tuple[int, int, int]]:
    """``(marker, body, length)`` of each marker segment from SOI to the first SOS.

    Each segment must start where the last one ends; raises :class:`_Malformed` where
    the chain breaks.
    """
    size = len(buf)
    if size < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        raise _Malformed("no JPEG start-of-image marker")
    at = 2
    while True:
        if at + 4 > size:
            raise _Malformed("the JPEG headers end before the first scan")
        if buf[at] != 0xFF:
            raise _Malformed(f"no JPEG marker where a marker segment should start (byte {at})")
        marker = buf[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        if marker in (0xD8, 0xD9):
            raise _Malformed("a JPEG start- or end-of-image marker before the first scan")
        length = _u16(buf, at + 2)
        if length < 2 or at + 2 + length > size:
            raise _Malformed(f"a JPEG marker segment (FF {marker:02X}) runs past the data")
        yield marker, at + 4, length
        if marker == 0xDA:
            return
        at += 2 + length


def _oversize(buf: memoryview, body: int, length: int) -> tuple[int, int] | None:
    """``(rows, columns)`` of a JPEG-LS oversize-dimension LSE segment (ID 4), or None.

    ITU-T T.870 lets a frame header give 0 rows or columns and put the real size,
    in 2 to 4 bytes each, in an LSE segment: ``ID 4, Wxy, Y, X``.
    """
    if length < 4 or buf[body] != 4:
        return None
    width = buf[body + 1]
    if not 2 <= width <= 4 or length != 4 + 2 * width:
        return None
    rows = int.from_bytes(buf[body + 2 : body + 2 + width], "big")
    columns = int.from_bytes(buf[body + 2 + width : body + 2 + 2 * width], "big")
    return rows, columns


def _read_jpeg(data: bytes | bytearray | memoryview) -> CodestreamInfo | None:
    buf = memoryview(data).cast("B")
    adobe, jfif = None, False
    info: CodestreamInfo | None = None
    oversize: tuple[int, int] | None = None
    try:
        for marker, body, length in _jpeg_segments(buf):
            if marker == 0xE0 and bytes(buf[body : body + 5]) == b"JFIF\x00":
                jfif = True
            elif marker == 0xEE and length >= 14 and bytes(buf[body : body + 5]) == b"Adobe":
                adobe = buf[body + 11]
            elif info is None and (marker in _SOF or marker == 0xF7):
                if length < 8:
                    return None
                components = buf[body + 5]
                ids = tuple(
                    buf[body + 6 + 3 * i] for i in range(components) if body + 6 + 3 * i < len(buf)
                )
                if marker == 0xF7:
                    family = Family.JPEG_LS
                elif marker in _LOSSLESS_SOF:
                    family = Family.JPEG_LOSSLESS
                else:
                    family = Family.JPEG
                info = CodestreamInfo(
                    family=family,
                    rows=_u16(buf, body + 1),
                    columns=_u16(buf, body + 3),
                    components=components,
                    precision=buf[body],
                    adobe_transform=adobe,
                    jfif=jfif,
                    component_ids=ids,
                )
                if family is not Family.JPEG_LS:
                    return info
            elif marker == 0xF8:
                # JPEG-LS: an oversize-dimension segment gives the size the frame
                # header leaves at 0 (a decoder such as CharLS allocates for it).
                oversize = _oversize(buf, body, length) or oversize
    except _Malformed:
        pass
    if info is not None and oversize is not None:
        info = replace(
            info,
            rows=oversize[0] if info.rows == 0 else info.rows,
            columns=oversize[1] if info.columns == 0 else info.columns,
        )
    return info  # None: no frame header before the first scan


def _j2k_siz(buf: memoryview) -> int | None:
    """Where a JPEG 2000 codestream's SIZ segment starts (its Lsiz), or None."""
    # A JP2 file (boxes) wraps the codestream; its header boxes are small.
    start = 0 if bytes(buf[:4]) == _SOC_SIZ else bytes(buf[:65536]).find(_SOC_SIZ)
    if start < 0 or start + 42 > len(buf):
        return None
    return start + 4


def _j2k_tiles(buf: memoryview, siz: int) -> int:
    """How many tiles the SIZ segment's grid has (0 for a tile size of 0)."""
    width, height, _, _, tile_w, tile_h, tile_x0, tile_y0 = (
        _u32(buf, siz + 4 + 4 * i) for i in range(8)
    )
    if tile_w == 0 or tile_h == 0:
        return 0
    across = max(0, -(-(width - tile_x0) // tile_w))
    down = max(0, -(-(height - tile_y0) // tile_h))
    return across * down


def _j2k_main_header(buf: memoryview, at: int) -> Iterator[tuple[int, int, int]]:
    """``(marker, body, length)`` of each main-header segment after SIZ, up to the first
    tile (SOT) or the first segment that does not fit."""
    while at + 4 <= len(buf) and buf[at] == 0xFF and buf[at + 1] != 0x90:
        length = _u16(buf, at + 2)
        if length < 2 or at + 2 + length > len(buf):
            return
        yield buf[at + 1], at + 4, length
        at += 2 + length


def _read_j2k(data: bytes | bytearray | memoryview) -> CodestreamInfo | None:
    buf = memoryview(data).cast("B")
    siz = _j2k_siz(buf)
    if siz is None:
        return None
    length = _u16(buf, siz)
    components = _u16(buf, siz + 36)
    if components < 1 or length != 38 + 3 * components or siz + length > len(buf):
        return None
    ssiz = buf[siz + 38]
    widest = max((buf[at] & 0x7F) + 1 for at in range(siz + 38, siz + length, 3))
    # High-throughput (Part 15) codestreams announce themselves with a CAP marker
    # in the main header, before the first tile (SOT).
    family, levels = Family.JPEG2000, 0
    for marker, body, size in _j2k_main_header(buf, siz + length):
        if marker == 0x50:
            family = Family.HTJ2K
        elif marker in (0x52, 0x53):  # COD, COC: the decomposition levels
            levels = max(levels, _coding_style(buf, marker, body, size, components)[0])
    return CodestreamInfo(
        family=family,
        rows=_u32(buf, siz + 8) - _u32(buf, siz + 16),
        columns=_u32(buf, siz + 4) - _u32(buf, siz + 12),
        components=components,
        precision=(ssiz & 0x7F) + 1,
        signed=bool(ssiz & 0x80),
        max_precision=widest,
        tiles=_j2k_tiles(buf, siz),
        levels=levels,
    )


def _coding_style(
    buf: memoryview, marker: int, body: int, length: int, components: int
) -> tuple[int, str | None]:
    """A COD or COC segment's decomposition levels, and what is wrong with it (or None).

    COD: Scod, progression, layers (2), MCT, then SPcod; COC: the component (1 byte,
    2 with more than 256 components), Scoc, then SPcoc. SPcod/SPcoc: levels, code-block
    width and height exponents (minus 2), block style, transform, and with bit 0 of
    Scod/Scoc one precinct size byte per resolution (ISO 15444-1 A.6.1, A.6.2).
    """
    end = body + length - 2
    if marker == 0x52:
        style_at, spcod = body, body + 5
    else:
        style_at = body + (1 if components < 257 else 2)
        spcod = style_at + 1
    if spcod + 5 > end:
        return 0, f"a JPEG 2000 coding style segment (FF {marker:02X}) of {length} bytes"
    levels, block_w, block_h = buf[spcod], buf[spcod + 1], buf[spcod + 2]
    precincts = levels + 1 if buf[style_at] & 1 else 0
    if spcod + 5 + precincts != end:
        return levels, f"a JPEG 2000 coding style segment (FF {marker:02X}) of {length} bytes"
    if levels > 32:
        return levels, f"{levels} JPEG 2000 decomposition levels (at most 32)"
    if block_w > 8 or block_h > 8 or block_w + block_h > 8:
        return levels, f"a JPEG 2000 code-block of 2^{block_w + 2} x 2^{block_h + 2}"
    return levels, None


# -- structure checks ---------------------------------------------------------------------
# The codec libraries are C and C++ that trust their input: a marker segment one byte
# too long crashes imagecodecs' lossless JPEG decoder, a tile width of 0 makes
# OpenJPH divide by zero, an RLE segment offset past the frame crashes imagecodecs'
# RLE decoder. The structure each one relies on is checked here first.


def header_problem(data: bytes | bytearray | memoryview, family: Family) -> str | None:
    """What makes a codestream's headers unsafe to hand to a codec, or None."""
    if family in (Family.JPEG, Family.JPEG_LOSSLESS, Family.JPEG_LS):
        return _jpeg_problem(memoryview(data).cast("B"))
    if family in (Family.JPEG2000, Family.HTJ2K):
        return _j2k_problem(memoryview(data).cast("B"))
    if family is Family.RLE:
        return _rle_problem(memoryview(data).cast("B"))
    return None


def _jpeg_tables_problem(buf: memoryview, marker: int, body: int, end: int) -> str | None:
    """DHT and DQT: the tables must fill their segment exactly."""
    at = body
    while at < end:
        if marker == 0xC4:  # DHT: class/id, 16 counts, the symbols
            if at + 17 > end:
                return "a JPEG Huffman table is cut short"
            at += 17 + sum(buf[at + 1 : at + 17])
        else:  # DQT: precision/id, 64 entries of 1 or 2 bytes
            precision = buf[at] >> 4
            if precision > 1:
                return f"a JPEG quantization table has precision {precision}"
            at += 1 + 64 * (precision + 1)
    return None if at == end else "a JPEG table runs past its marker segment"


def _jpeg_problem(buf: memoryview) -> str | None:
    """The marker segments from SOI to the first SOS: each where the last one ends."""
    frame = False
    try:
        for marker, body, length in _jpeg_segments(buf):
            end = body + length - 2
            if marker in _SOF or marker == 0xF7:
                components = buf[body + 5] if length >= 8 else 0
                if components == 0 or length != 8 + 3 * components:
                    return f"a JPEG frame header of {length} bytes for {components} components"
                if frame:
                    return "a second JPEG frame header"
                precision = buf[body]
                lossless = marker == 0xF7 or marker in _LOSSLESS_SOF
                if not (2 <= precision <= 16 if lossless else precision in (8, 12)):
                    kind = "JPEG-LS" if marker == 0xF7 else "JPEG"
                    return f"a {kind} frame header (FF {marker:02X}) of {precision}-bit samples"
                frame = True
            elif marker == 0xF8 and length >= 3 and buf[body] == 4:
                if _oversize(buf, body, length) is None:
                    return f"a JPEG-LS oversize-dimension segment of {length} bytes"
            elif marker in (0xC4, 0xDB):
                problem = _jpeg_tables_problem(buf, marker, body, end)
                if problem is not None:
                    return problem
            elif marker == 0xDA:
                components = buf[body] if length >= 3 else 0
                if not frame:
                    return "a JPEG scan before the frame header"
                if not 1 <= components <= 4 or length != 6 + 2 * components:
                    return f"a JPEG scan header of {length} bytes for {components} components"
    except _Malformed as exc:
        return str(exc)
    return None


def _j2k_problem(buf: memoryview) -> str | None:
    """The SIZ marker segment: sizes, offsets, tiles and subsampling (ISO 15444-1 A.5.1);
    the coding style segments (COD, COC) of the main header."""
    siz = _j2k_siz(buf)
    if siz is None:
        return "no JPEG 2000 image and tile size (SIZ) marker"
    length, components = _u16(buf, siz), _u16(buf, siz + 36)
    if not 1 <= components <= 16384 or length != 38 + 3 * components:
        return f"a JPEG 2000 SIZ segment of {length} bytes for {components} components"
    if siz + length > len(buf):
        return "the JPEG 2000 SIZ segment runs past the data"
    width, height, x0, y0, tile_w, tile_h, tile_x0, tile_y0 = (
        _u32(buf, siz + 4 + 4 * i) for i in range(8)
    )
    if tile_w == 0 or tile_h == 0:
        return "a JPEG 2000 tile size of 0"
    if x0 >= width or y0 >= height:
        return "a JPEG 2000 image offset outside the image"
    if tile_x0 > x0 or tile_y0 > y0 or tile_x0 + tile_w <= x0 or tile_y0 + tile_h <= y0:
        return "JPEG 2000 tiles that do not cover the image"
    for at in range(siz + 38, siz + 38 + 3 * components, 3):
        if (buf[at] & 0x7F) + 1 > 38:
            return f"a JPEG 2000 component precision of {(buf[at] & 0x7F) + 1} bits"
        if buf[at + 1] == 0 or buf[at + 2] == 0:
            return "a JPEG 2000 component subsampling of 0"
    tiles = _j2k_tiles(buf, siz)
    if tiles > _J2K_MAX_TILES:
        # Tile indices (Isot) are 16-bit: a grid of more tiles cannot be coded.
        return f"a JPEG 2000 grid of {tiles} tiles (at most {_J2K_MAX_TILES})"
    for marker, body, size in _j2k_main_header(buf, siz + length):
        if marker in (0x52, 0x53):
            problem = _coding_style(buf, marker, body, size, components)[1]
            if problem is not None:
                return problem
    return None


_J2K_MAX_TILES = 65535


def _rle_problem(buf: memoryview) -> str | None:
    """What is wrong with an RLE frame's segment table (PS3.5 G.5), or None.

    Checked before any codec runs: imagecodecs (2026.3) trusts the offsets, reading
    past the frame for one a little beyond its end and crashing the process for a
    large one.
    """
    if len(buf) < 64:
        return f"RLE frame of {len(buf)} bytes is shorter than its 64-byte header"
    count = int.from_bytes(buf[:4], "little")
    if not 1 <= count <= 15:
        return f"RLE header names {count} segments (1 to 15 allowed)"
    offsets = [int.from_bytes(buf[4 * i : 4 * i + 4], "little") for i in range(1, count + 1)]
    if offsets[0] != 64:
        return f"the first RLE segment starts at {offsets[0]}, not right after the header"
    ends = [*offsets[1:], len(buf)]
    if any(end <= start for start, end in zip(offsets, ends, strict=True)):
        return "RLE segment offsets are out of order or point past the frame"
    return None


def rle_segment_count(data: bytes | bytearray | memoryview) -> int | None:
    """The number of segments an RLE frame's header names (None: no header).

    Each segment holds one byte of every sample of one component (PS3.5 G.2), so a
    frame of ``samples`` components of ``bits_allocated`` bits has
    ``samples × ceil(bits_allocated / 8)`` of them; a decoder writes ``rows ×
    columns`` bytes for each one the header names.
    """
    buf = memoryview(data).cast("B")
    return int.from_bytes(buf[:4], "little") if len(buf) >= 64 else None
