"""Hostile inputs, built by hand: codestream headers that claim more than they hold.

Each builder returns a small, structurally valid codestream (so the marker-chain
checks of :mod:`imageloader.decode.syntaxes` pass and only a cost bound can stop
it) or a file around one. Nothing here decodes anything.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

__all__ = [
    "deflated_part10",
    "deflated_zeros",
    "dicom_json_instance",
    "gzip_bomb",
    "gzip_zeros",
    "j2k",
    "jpeg",
    "jpeg_ls",
    "nifti_gz",
    "part10",
    "png_rgba",
    "rle",
]


def _segment(marker: int, body: bytes) -> bytes:
    return struct.pack(">HH", 0xFF00 | marker, len(body) + 2) + body


# -- JPEG 2000 (ISO 15444-1 A.5.1 SIZ, A.6.1 COD, A.6.4 QCD, A.4.2 SOT) --------------------


def j2k(
    rows: int,
    columns: int,
    components: int = 1,
    precision: int = 16,
    *,
    tile: tuple[int, int] | None = None,
    levels: int = 5,
    signed: bool = False,
    tile_data: bytes = b"\x00" * 64,
) -> bytes:
    """A J2K codestream: SOC, SIZ, COD, QCD, one tile part (empty packets), EOC."""
    tile_h, tile_w = tile if tile is not None else (rows, columns)
    ssiz = (0x80 if signed else 0) | (precision - 1)
    siz = (
        struct.pack(">HIIIIIIIIH", 0, columns, rows, 0, 0, tile_w, tile_h, 0, 0, components)
        + bytes([ssiz, 1, 1]) * components
    )
    # Scod 0 (default precincts), LRCP, 1 layer, no MCT; levels, 64x64 blocks, 5-3 reversible.
    cod = struct.pack(">BBHBBBBBB", 0, 0, 1, 0, levels, 4, 4, 0, 1)
    exponent = min(precision + 2, 31) << 3
    qcd = bytes([0x40]) + bytes([exponent]) * (3 * levels + 1)  # no quantization
    sot_body = struct.pack(">HIBB", 0, 0, 0, 1)  # Psot 0: the tile part runs to EOC
    return b"".join(
        [
            b"\xff\x4f",
            _segment(0x51, siz),
            _segment(0x52, cod),
            _segment(0x5C, qcd),
            _segment(0x90, sot_body),
            b"\xff\x93",
            tile_data,
            b"\xff\xd9",
        ]
    )


# -- JPEG (ITU T.81 B.2) and JPEG-LS (ITU T.87 C.2) ------------------------------------------


def _dqt() -> bytes:
    return _segment(0xDB, bytes([0]) + bytes([1]) * 64)


def _dht() -> bytes:
    # One DC and one AC table, each with a single 1-bit code for symbol 0.
    counts = bytes([1]) + bytes(15)
    return _segment(0xC4, bytes([0x00]) + counts + b"\x00" + bytes([0x10]) + counts + b"\x00")


def jpeg(
    rows: int, columns: int, components: int = 1, precision: int = 8, *, sof: int = 0xC0
) -> bytes:
    """A JPEG whose frame header (SOFn) claims ``rows`` x ``columns`` x ``components``."""
    frame = struct.pack(">BHHB", precision, rows, columns, components) + b"".join(
        bytes([i + 1, 0x11, 0]) for i in range(components)
    )
    scan_components = min(components, 4)
    scan = bytes([scan_components]) + b"".join(bytes([i + 1, 0x00]) for i in range(scan_components))
    scan += bytes([0, 63, 0]) if sof != 0xC3 else bytes([1, 0, 0])
    return b"".join(
        [
            b"\xff\xd8",
            _dqt(),
            _segment(sof, frame),
            _dht(),
            _segment(0xDA, scan),
            b"\x00" * 256,
            b"\xff\xd9",
        ]
    )


def jpeg_ls(
    rows: int,
    columns: int,
    components: int = 1,
    precision: int = 16,
    *,
    oversize: tuple[int, int] | None = None,
) -> bytes:
    """A JPEG-LS stream: SOF55 claiming the size, and optionally an LSE oversize-dimension
    segment (ID 4, ITU T.870) claiming ``(rows, columns)`` with 32-bit fields."""
    frame = struct.pack(">BHHB", precision, rows, columns, components) + b"".join(
        bytes([i + 1, 0x11, 0]) for i in range(components)
    )
    segments = [b"\xff\xd8", _segment(0xF7, frame)]
    if oversize is not None:
        segments.append(_segment(0xF8, struct.pack(">BBII", 4, 4, oversize[0], oversize[1])))
    scan = bytes([components]) + b"".join(bytes([i + 1, 0]) for i in range(components))
    scan += bytes([0, 0 if components == 1 else 2, 0])  # NEAR 0, ILV, point transform
    segments += [_segment(0xDA, scan), b"\x00" * 256, b"\xff\xd9"]
    return b"".join(segments)


# -- RLE (PS3.5 G) -------------------------------------------------------------------------


def rle(segments: int, segment_bytes: int) -> bytes:
    """An RLE frame: a 64-byte header naming ``segments`` segments, each ``segment_bytes``
    long and made of replicate runs (2 bytes that decode to 128), a 64x expansion."""
    body = b"\x81\x00" * (segment_bytes // 2)
    offsets = [64 + i * len(body) for i in range(segments)]
    header = struct.pack("<16I", segments, *offsets, *([0] * (15 - segments)))
    return header + body * segments


# -- DICOM Part 10 ----------------------------------------------------------------------------


def _image_dataset(rows: int, columns: int, samples: int, bits: int, photometric: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    return ds


def _write(ds: Dataset, syntax: str, path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


def part10(
    path: Path,
    frame: bytes,
    syntax: str,
    *,
    rows: int,
    columns: int,
    samples: int = 1,
    bits: int = 16,
    photometric: str | None = None,
) -> Path:
    """``frame`` encapsulated in a Part 10 file whose pixel module says what is given."""
    pi = photometric or ("RGB" if samples > 1 else "MONOCHROME2")
    ds = _image_dataset(rows, columns, samples, bits, pi)
    ds.NumberOfFrames = 1
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return _write(ds, syntax, path)


SYNTAX = {
    "j2k": JPEG2000Lossless,
    "jpeg": JPEGBaseline8Bit,
    "jpeg-ls": JPEGLSLossless,
    "rle": RLELossless,
    "native": ExplicitVRLittleEndian,
}


def deflated_part10(path: Path, rows: int, columns: int, frames: int) -> Path:
    """A deflated Part 10 object of ``frames`` zero-filled 16-bit frames (tiny on disk)."""
    ds = _image_dataset(rows, columns, 1, 16, "MONOCHROME2")
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(rows * columns * 2 * frames)
    ds["PixelData"].VR = "OW"
    return _write(ds, DeflatedExplicitVRLittleEndian, path)


def deflated_zeros(zeros: int) -> bytes:
    """A deflated Part 10 object whose dataset is an empty SOPClassUID then ``zeros``
    zero bytes (~1/1000 on disk).

    Within the inflated-size limit, but pydicom parses the zeros as millions of empty
    elements (0000,0000), 8 bytes each: ~22 s of CPU for 100 MB.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = DicomBytesIO()
    out.write(bytes(128) + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    first = b"\x08\x00\x16\x00UI\x00\x00"  # (0008,0016) UI, empty: the dataset starts
    return out.getvalue() + _deflate_zeros(first, zeros)


def dicom_json_instance(values: int) -> bytes:
    """One instance's DICOM JSON metadata padded with a private DS element of ``values``
    numbers (about 4 bytes each on the wire: 75 MB for ~19 million values)."""
    ds = _image_dataset(64, 64, 1, 16, "MONOCHROME2")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    item = ds.to_json_dict()
    item["00020010"] = {"vr": "UI", "Value": [ExplicitVRLittleEndian]}
    item["00090010"] = {"vr": "LO", "Value": ["HOSTILE"]}  # private creator of block 10
    head = json.dumps([item])[:-2]  # without the closing "}]"
    padding = b", " + b'"00091001": {"vr": "DS", "Value": [' + b",".join([b"1.0"] * values)
    return head.encode() + padding + b"]}}]"


# -- web, NIfTI, HTTP bodies -----------------------------------------------------------------


def png_rgba(width: int, height: int) -> bytes:
    """A PNG of ``width`` x ``height`` RGBA, all zero (about 1 MB for 16384²)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    # Each row: filter byte 0 ("none"), then 4 zero bytes per pixel: all zeros.
    idat = _zlib_zeros(height * (1 + 4 * width))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


def _crc32_zeros(crc: int, length: int) -> int:
    """``zlib.crc32(bytes(length), crc)`` in O(log length), as zlib's crc32_combine:
    the register (the CRC without its final inversion) times the operator of
    ``length`` zero bytes."""
    crc ^= 0xFFFFFFFF
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # the operator for one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four
    while length:
        even = _gf2_square(odd)
        if length & 1:
            crc = _gf2_times(even, crc)
        length >>= 1
        if not length:
            break
        odd = _gf2_square(even)
        if length & 1:
            crc = _gf2_times(odd, crc)
        length >>= 1
    return crc ^ 0xFFFFFFFF


def _deflate_zeros(prefix: bytes, zeros: int) -> bytes:
    """Raw deflate of ``prefix`` then ``zeros`` zero bytes, built without deflating
    them all: after a full flush, deflate codes each 1 MiB of zeros as the same
    ~1 KB, so that block is repeated (about 1/1000 of the inflated size)."""
    block = 1 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    zero_block = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.compress(bytes(zeros % block)) + compressor.flush()
    return b"".join([head, zero_block * (zeros // block), tail])


def gzip_zeros(prefix: bytes, zeros: int) -> bytes:
    """A gzip member of ``prefix`` then ``zeros`` zero bytes (see :func:`_deflate_zeros`)."""
    crc = _crc32_zeros(zlib.crc32(prefix), zeros)
    size = (len(prefix) + zeros) & 0xFFFFFFFF
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + _deflate_zeros(prefix, zeros) + struct.pack("<II", crc, size)


def _zlib_zeros(zeros: int) -> bytes:
    """A zlib stream of ``zeros`` zero bytes (Adler-32 of zeros: a = 1, b = n)."""
    adler = ((zeros % 65521) << 16) | 1
    return b"\x78\xda" + _deflate_zeros(b"", zeros) + struct.pack(">I", adler)


def nifti_gz(shape: tuple[int, int, int], dtype: str = "int16") -> bytes:
    """A gzipped NIfTI-1 file of zeros: a few MB that inflate to the whole volume."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *shape, 1, 1, 1, 1)
    codes = {"uint8": (2, 8), "int16": (4, 16), "int32": (8, 32), "float32": (16, 32)}
    code, bitpix = codes[dtype]
    struct.pack_into("<hh", header, 70, code, bitpix)
    struct.pack_into("<8f", header, 76, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<f", header, 108, 352.0)  # vox_offset
    struct.pack_into("<f", header, 112, 1.0)  # scl_slope
    struct.pack_into("<hh", header, 252, 0, 1)  # qform_code 0, sform_code 1
    struct.pack_into("<4f", header, 280, 1.0, 0.0, 0.0, 0.0)
    struct.pack_into("<4f", header, 296, 0.0, 1.0, 0.0, 0.0)
    struct.pack_into("<4f", header, 312, 0.0, 0.0, 1.0, 0.0)
    header[344:348] = b"n+1\x00"
    voxels = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return gzip_zeros(bytes(header) + bytes(4), voxels)


def gzip_bomb(inflated: int) -> bytes:
    """A gzip body of zeros that inflates to ``inflated`` bytes (about 1/1000 of it)."""
    return gzip_zeros(b"", inflated)
