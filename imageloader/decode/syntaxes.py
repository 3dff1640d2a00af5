"""Transfer syntaxes and the codestreams they carry.

:data:`SYNTAXES` maps every transfer syntax imageloader decodes to its
:class:`Family` (which codecs can read it) and byte order. :func:`sniff` and
:func:`read_header` look at a codestream's first bytes without decoding it: the
magic number tells a JPEG from a JPEG 2000 stream (servers such as Orthanc label
HTJ2K frames as uncompressed), and the frame header gives the size the codestream
claims, so a decompression bomb is refused before a codec allocates anything.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "SYNTAXES",
    "CodestreamInfo",
    "Family",
    "TransferSyntax",
    "has_end_marker",
    "jpeg_is_ycbcr",
    "markers_say_ycbcr",
    "read_header",
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


@dataclass(frozen=True, slots=True)
class CodestreamInfo:
    """What a codestream's main header says, read without decoding.

    ``precision`` is bits per sample; ``signed`` is known only for JPEG 2000.
    The JPEG fields say whether the decoder would take the samples for YCbCr:
    ``adobe_transform`` (APP14, None if absent), ``jfif`` (APP0) and the
    component identifiers.
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


_SOC_SIZ = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
# SOF markers: C0-C3, C5-C7, C9-CB, CD-CF (C4 DHT, C8 JPG, CC DAC are not); F7 is JPEG-LS.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


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


def _read_jpeg(data: bytes | bytearray | memoryview) -> CodestreamInfo | None:
    buf = memoryview(data).cast("B")
    size = len(buf)
    if size < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return None
    at, adobe, jfif = 2, None, False
    while at + 4 <= size:
        if buf[at] != 0xFF:
            return None
        marker = buf[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        length = _u16(buf, at + 2)
        body = at + 4
        if length < 2 or body + length - 2 > size:
            return None
        if marker == 0xE0 and bytes(buf[body : body + 5]) == b"JFIF\x00":
            jfif = True
        elif marker == 0xEE and length >= 14 and bytes(buf[body : body + 5]) == b"Adobe":
            adobe = buf[body + 11]
        elif marker in _SOF or marker == 0xF7:
            if length < 8:
                return None
            components = buf[body + 5]
            ids = tuple(buf[body + 6 + 3 * i] for i in range(components) if body + 6 + 3 * i < size)
            if marker == 0xF7:
                family = Family.JPEG_LS
            elif marker in (0xC3, 0xC7, 0xCB, 0xCF):
                family = Family.JPEG_LOSSLESS
            else:
                family = Family.JPEG
            return CodestreamInfo(
                family=family,
                rows=_u16(buf, body + 1),
                columns=_u16(buf, body + 3),
                components=components,
                precision=buf[body],
                adobe_transform=adobe,
                jfif=jfif,
                component_ids=ids,
            )
        elif marker == 0xDA:  # start of scan before any frame header
            return None
        at = body + length - 2
    return None


def _read_j2k(data: bytes | bytearray | memoryview) -> CodestreamInfo | None:
    buf = memoryview(data).cast("B")
    # A JP2 file (boxes) wraps the codestream; its header boxes are small.
    start = 0 if bytes(buf[:4]) == _SOC_SIZ else bytes(buf[:65536]).find(_SOC_SIZ)
    if start < 0 or start + 42 > len(buf):
        return None
    siz = start + 4  # Lsiz
    length = _u16(buf, siz)
    components = _u16(buf, siz + 36)
    if components < 1 or length != 38 + 3 * components or siz + length > len(buf):
        return None
    ssiz = buf[siz + 38]
    # High-throughput (Part 15) codestreams announce themselves with a CAP marker
    # in the main header, before the first tile (SOT).
    family, at = Family.JPEG2000, siz + length
    while at + 4 <= len(buf) and buf[at] == 0xFF and buf[at + 1] != 0x90:
        if buf[at + 1] == 0x50:
            family = Family.HTJ2K
            break
        at += 2 + _u16(buf, at + 2)
    return CodestreamInfo(
        family=family,
        rows=_u32(buf, siz + 8) - _u32(buf, siz + 16),
        columns=_u32(buf, siz + 4) - _u32(buf, siz + 12),
        components=components,
        precision=(ssiz & 0x7F) + 1,
        signed=bool(ssiz & 0x80),
    )
