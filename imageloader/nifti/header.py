"""NIfTI-1 and NIfTI-2 headers: finding one in the first bytes, parsing it, checking limits.

:class:`HeaderReader` takes the bytes of a file as they arrive (gzip-compressed or
not, told by the magic number) and says when it holds enough for the header,
inflating only that much: the caller stops reading there. :func:`parse_header`
reads those bytes with nibabel into a small, picklable :class:`NiftiInfo`.

nibabel costs a quarter of a second to import, so it is imported inside the
functions that use it, which run in worker threads, never on the event loop.
Only single-file NIfTI (``n+1``, ``n+2``) is read; a ``.hdr``/``.img`` pair and
Analyze 7.5 are refused.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import DecodeError, ImageTooLargeError, NotFoundError
from ..limits import Limits

__all__ = [
    "HEADER_BYTES",
    "MAX_HEADER_WIRE_BYTES",
    "HeaderReader",
    "NiftiInfo",
    "check_limits",
    "open_file",
    "parse_header",
    "read_file_head",
]

NIFTI1_HEADER_BYTES = 348
NIFTI2_HEADER_BYTES = 540
#: Bytes that hold either header (a NIfTI-1 file may be shorter than this).
HEADER_BYTES = NIFTI2_HEADER_BYTES
#: Compressed bytes read at most looking for the header: a gzip stream that has
#: not produced 540 bytes by then is not a NIfTI file worth reading.
MAX_HEADER_WIRE_BYTES = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
#: Bytes read from disk at a time looking for the header (one read for a .nii).
_HEAD_STEP = 4096

#: nibabel dtype kinds an image can be made of (no complex, no RGB records).
_SUPPORTED_KINDS = frozenset("uif")


class HeaderReader:
    """Collects a file's first :data:`HEADER_BYTES` bytes (inflated) from its chunks.

    ``feed(chunk)`` returns True once the header bytes are in; ``finish()`` returns
    them (fewer at the end of a short file). ``wire_bytes`` counts what was fed.
    """

    def __init__(self, image_id: str) -> None:
        self.image_id = image_id
        self.wire_bytes = 0
        self.compressed: bool | None = None
        self._pending = b""
        self._out = bytearray()
        self._inflater: Any = None

    @property
    def done(self) -> bool:
        """Whether the header bytes are all in."""
        return len(self._out) >= HEADER_BYTES

    def feed(self, chunk: bytes) -> bool:
        """Add the next bytes of the file; True when no more are needed."""
        self.wire_bytes += len(chunk)
        if self.done:
            return True
        if self.compressed is None:
            self._pending += chunk
            if len(self._pending) < len(GZIP_MAGIC):
                return False
            chunk, self._pending = self._pending, b""
            self.compressed = chunk.startswith(GZIP_MAGIC)
            if self.compressed:
                self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        if self.compressed:
            self._inflate(chunk)
        else:
            self._out += chunk[: HEADER_BYTES - len(self._out)]
        if not self.done and self.wire_bytes > MAX_HEADER_WIRE_BYTES:
            raise DecodeError(
                f"no NIfTI header in the first {MAX_HEADER_WIRE_BYTES} bytes",
                image_id=self.image_id,
            )
        return self.done

    def _inflate(self, chunk: bytes) -> None:
        try:
            # max_length bounds the work to what the header needs, however well
            # the rest of the chunk would inflate.
            self._out += self._inflater.decompress(chunk, HEADER_BYTES - len(self._out))
        except zlib.error as exc:
            raise DecodeError(f"corrupt gzip stream: {exc}", image_id=self.image_id) from exc

    def finish(self) -> bytes:
        """The header bytes read (the whole file when it is shorter)."""
        if self._pending:
            self._out += self._pending[:HEADER_BYTES]
            self._pending = b""
        return bytes(self._out[:HEADER_BYTES])


def sniff_version(head: bytes) -> int | None:
    """1 or 2 for a single-file NIfTI header, None for anything else."""
    if len(head) < NIFTI1_HEADER_BYTES:
        return None
    for order in "<>":
        (size,) = struct.unpack_from(f"{order}i", head)
        if size == NIFTI1_HEADER_BYTES and head[344:348] == b"n+1\x00":
            return 1
        if size == NIFTI2_HEADER_BYTES and head[4:8] == b"n+2\x00":
            return 2 if len(head) >= NIFTI2_HEADER_BYTES else None
    return None


def _describe(head: bytes) -> str:
    if len(head) >= NIFTI1_HEADER_BYTES and head[344:347] in (b"ni1", b"ni2"):
        return "a NIfTI header of a .hdr/.img pair (only single-file NIfTI is read)"
    if len(head) < NIFTI1_HEADER_BYTES:
        return f"{len(head)} bytes, too short for a NIfTI header"
    return "not a NIfTI-1 or NIfTI-2 file"


@dataclass(frozen=True, slots=True)
class NiftiInfo:
    """What a NIfTI header says about its image, with the affine already in LPS.

    ``shape`` is the data shape ``(nx, ny, nz, ...)``; the voxel ``(i, j, k)`` sits
    at ``affine @ (i, j, k, 1)`` in DICOM patient coordinates (LPS, mm).
    """

    version: int
    shape: tuple[int, ...]
    #: numpy dtype string with its byte order, e.g. ``">i2"``.
    dtype: str
    vox_offset: int
    #: scl_slope and scl_inter as Cornerstone reads them (None: absent or unusable).
    slope: float | None
    intercept: float | None
    #: 4×4 voxel → LPS affine, row-major.
    affine: tuple[tuple[float, ...], ...]
    #: The affine came from the qform or sform (False: pixdim scaling only).
    has_orientation: bool
    description: str = ""
    cal_min: float = 0.0
    cal_max: float = 0.0
    intent_code: int = 0

    @property
    def columns(self) -> int:
        """Voxels along i: the columns of each slice."""
        return self.shape[0]

    @property
    def rows(self) -> int:
        """Voxels along j: the rows of each slice."""
        return self.shape[1] if len(self.shape) > 1 else 1

    @property
    def slices(self) -> int:
        """Voxels along k: the slices of one volume (one timepoint)."""
        return self.shape[2] if len(self.shape) > 2 else 1

    @property
    def frames(self) -> int:
        """Slices over every volume: ``slices × nt × ...`` (frames are k-fastest)."""
        return math.prod(self.shape[2:]) if len(self.shape) > 2 else 1

    @property
    def voxels(self) -> int:
        """Voxels in the whole file."""
        return math.prod(self.shape)

    @property
    def data_bytes(self) -> int:
        """Bytes of the voxel data."""
        return self.voxels * np.dtype(self.dtype).itemsize

    @property
    def end(self) -> int:
        """Where the voxel data ends in the (inflated) file."""
        return self.vox_offset + self.data_bytes


def _number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _scaling(header: Any) -> tuple[float | None, float | None]:
    # Cornerstone's modalityScaleNifti: a slope of 0 or NaN means none; a NaN
    # intercept means 0. (nibabel's get_slope_inter raises on the latter.)
    slope = _number(header["scl_slope"])
    if slope is None or slope == 0:
        return None, None
    return slope, _number(header["scl_inter"]) or 0.0


def _affine_lps(header: Any) -> tuple[np.ndarray[Any, Any], bool]:
    if int(header["sform_code"]) > 0 or int(header["qform_code"]) > 0:
        ras = np.asarray(header.get_best_affine(), dtype=np.float64)
        oriented = True
    else:
        # NIfTI's "method 1": scaling by pixdim, no rotation, origin 0 (nibabel's
        # get_best_affine would flip x here, after Analyze, which NIfTI does not).
        ras = np.diag([*(abs(float(v)) for v in header["pixdim"][1:4]), 1.0])
        oriented = False
    # NIfTI's world is RAS+, DICOM's patient coordinates LPS+: negate x and y.
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ ras, oriented


def parse_header(head: bytes, image_id: str) -> NiftiInfo:
    """Parse the header at the start of ``head`` (blocking: imports and runs nibabel)."""
    version = sniff_version(head)
    if version is None:
        raise DecodeError(_describe(head), image_id=image_id)
    import nibabel

    # nibabel is partly typed (and not at all for mypy here): treat it as Any.
    klass: Any = nibabel.Nifti1Header if version == 1 else nibabel.Nifti2Header
    size = NIFTI1_HEADER_BYTES if version == 1 else NIFTI2_HEADER_BYTES
    try:
        # Exactly the header: the extensions that may follow are not needed.
        header = klass.from_fileobj(io.BytesIO(head[:size]))
        dtype = np.dtype(header.get_data_dtype())
        shape = tuple(int(n) for n in header.get_data_shape())
        affine, oriented = _affine_lps(header)
    except Exception as exc:  # nibabel's HeaderDataError and the numpy errors below it
        raise DecodeError(f"invalid NIfTI header: {exc}", image_id=image_id) from exc
    if dtype.kind not in _SUPPORTED_KINDS or dtype.fields is not None:
        raise DecodeError(
            f"NIfTI data type {header.get_value_label('datatype')} is not supported",
            image_id=image_id,
        )
    if not shape or min(shape) < 1:
        raise DecodeError(f"NIfTI image has no voxels (shape {shape})", image_id=image_id)
    slope, intercept = _scaling(header)
    # The raw field: nibabel's get_data_offset() converts it with int(), which a NaN
    # or an infinity makes raise ValueError.
    offset = float(header["vox_offset"])
    if not math.isfinite(offset) or offset < 0:
        raise DecodeError(f"invalid NIfTI vox_offset {offset}", image_id=image_id)
    raw_description = header["descrip"].item()
    return NiftiInfo(
        version=version,
        shape=shape,
        dtype=dtype.str,
        vox_offset=max(int(offset), size + 4),
        slope=slope,
        intercept=intercept,
        affine=tuple(tuple(float(v) for v in row) for row in affine),
        has_orientation=oriented,
        description=raw_description.split(b"\x00", 1)[0].decode("latin-1").strip(),
        cal_min=_number(header["cal_min"]) or 0.0,
        cal_max=_number(header["cal_max"]) or 0.0,
        intent_code=int(header["intent_code"]),
    )


def check_limits(info: NiftiInfo, limits: Limits, image_id: str) -> None:
    """Refuse an image whose slices or voxel data exceed the limits (before reading it)."""
    pixels = info.rows * info.columns
    if pixels > limits.max_frame_pixels:
        raise ImageTooLargeError(
            f"NIfTI slices of {info.columns}x{info.rows} pixels exceed the limit of "
            f"{limits.max_frame_pixels}",
            image_id=image_id,
        )
    if info.data_bytes > limits.max_volume_bytes:
        raise ImageTooLargeError(
            f"NIfTI data of {info.data_bytes} bytes exceeds the volume limit of "
            f"{limits.max_volume_bytes}",
            image_id=image_id,
        )


def open_file(path: Path, image_id: str) -> BinaryIO:
    """Open a local NIfTI file for reading, with our errors (blocking)."""
    try:
        return open(path, "rb")  # the callers close it, with "with"
    except FileNotFoundError as exc:
        raise NotFoundError("no such file", image_id=image_id, url=str(path)) from exc
    except OSError as exc:
        raise DecodeError(f"cannot read {str(path)!r}: {exc}", image_id=image_id) from exc


def read_file_head(path: Path, image_id: str) -> tuple[bytes, int]:
    """The header bytes of a local file and the bytes read for them (blocking)."""
    reader = HeaderReader(image_id)
    with open_file(path, image_id) as fp:
        while not reader.done and (chunk := fp.read(_HEAD_STEP)):
            reader.feed(chunk)
    return reader.finish(), reader.wire_bytes
