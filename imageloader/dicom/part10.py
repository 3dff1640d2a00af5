"""Parse a DICOM Part 10 object once and hand out its frames.

:func:`parse_part10` reads the whole object with pydicom (it blocks: call it in a
worker thread, never on the event loop) and returns a :class:`Part10Object` whose
:meth:`~Part10Object.frame` gives one frame's bytes, 1-based, in O(1) for native
pixel data (a ``memoryview`` slice, no copy) and through an offset index built on
first use for encapsulated pixel data. :func:`pixel_params` checks a dataset and
gives what a decode worker needs (through its metadata modules).

Frames are raw: big endian native frames stay big endian (the decoder swaps), except
8-bit data encoded as OW in big endian, whose 16-bit words are swapped back once
here so the samples are in order. Deflated objects come out inflated, as explicit
VR little endian bytes.
"""

from __future__ import annotations

import io
import os
import threading
import time
import zlib
from typing import BinaryIO, cast

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from ..decode.params import PixelParams
from ..errors import (
    DecodeError,
    ImageTooLargeError,
    LoadCancelledError,
    LoadTimeoutError,
    MetadataError,
    NotFoundError,
)
from ..imageid import check_frame
from ..limits import Limits
from ._encapsulated import FrameIndex, build_frame_index
from ._palette import PaletteError, read_palette
from ._values import FrameView, element_value, frame_count, to_string
from .modules import metadata_modules, pixel_params_from_modules

__all__ = ["Part10Object", "frame_count", "parse_part10", "pixel_params", "read_header"]

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


_INFLATE_STEP = 1 << 20

#: Reads pydicom may make of one object (one to three per element): far above what
#: real objects need (a 300-frame enhanced CT 8,822, ~29 a frame; a 256 MiB native
#: CT 541; the most of pydicom's and pydicom-data's test files 3,597), far below what
#: a few MB of zeros inflated make (pydicom parses zeros as millions of empty
#: elements). A million reads are ~3 s of CPU.
MAX_PARSE_READS = 1_000_000

#: A raw deflate stream of nothing: what pydicom is given to inflate, once the
#: dataset has been inflated here (under the bounds) instead.
_EMPTY_DEFLATE = b"\x03\x00"


class _ParseGuard:
    """The bounds of one parse, checked at every read pydicom makes.

    A set ``cancel`` event (the load was cancelled) stops the parse with
    LoadCancelledError; more than ``max_reads`` reads raise ImageTooLargeError and
    passing the deadline (``limits.max_parse_seconds`` from the start) LoadTimeoutError.
    """

    def __init__(
        self,
        limits: Limits,
        image_id: str | None,
        cancel: threading.Event | None,
        max_reads: int | None = None,
    ) -> None:
        self.image_id = image_id
        self.cancel = cancel
        self.reads = 0
        self.max_reads = MAX_PARSE_READS if max_reads is None else max_reads
        self.seconds = limits.max_parse_seconds
        self.deadline = time.monotonic() + limits.max_parse_seconds

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise LoadCancelledError("the load was cancelled while parsing", image_id=self.image_id)
        self.reads += 1
        if self.reads > self.max_reads:
            raise ImageTooLargeError(
                f"the DICOM object has more than {self.max_reads} elements to read",
                image_id=self.image_id,
            )
        if time.monotonic() > self.deadline:
            raise LoadTimeoutError(
                f"parsing the DICOM object took longer than max_parse_seconds ({self.seconds} s)",
                image_id=self.image_id,
            )


def _inflated_size(
    data: bytes, limit: int, image_id: str | None, guard: _ParseGuard | None = None
) -> int:
    """The size of a deflated dataset inflated (counted, not kept), refused past ``limit``.

    The input goes in in slices: each step's unconsumed input is copied, so feeding
    it whole would copy the rest of a large object at every step. A ``guard`` is
    checked between steps.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    view, total = memoryview(data), 0
    try:
        for start in range(0, len(view), _INFLATE_STEP):
            pending: bytes | memoryview = view[start : start + _INFLATE_STEP]
            while True:
                if guard is not None:
                    guard.check()
                chunk = inflater.decompress(pending, _INFLATE_STEP)
                total += len(chunk)
                if total > limit:
                    raise ImageTooLargeError(
                        f"the deflated dataset inflates past the limit of {limit} bytes",
                        image_id=image_id,
                    )
                if inflater.eof:
                    return total
                pending = inflater.unconsumed_tail
                if not pending and len(chunk) < _INFLATE_STEP:
                    break
    except zlib.error as exc:
        raise DecodeError(f"unreadable deflated dataset: {exc}", image_id=image_id) from exc
    raise DecodeError("the deflated dataset is truncated", image_id=image_id)


def _check_inflated_size(data: bytes, limit: int, image_id: str | None) -> None:
    """Refuse a deflated dataset that inflates past ``limit`` bytes (counted, not kept)."""
    _inflated_size(data, limit, image_id)


def _inflate(data: bytes, limit: int, image_id: str | None, guard: _ParseGuard) -> bytes:
    """A deflated dataset inflated, once it is known to fit ``limit``.

    Counted first, so that a bomb holds no more than a step of its output; the second
    pass is then bounded by the size counted.
    """
    size = _inflated_size(data, limit, image_id, guard)
    guard.check()
    return zlib.decompress(data, -zlib.MAX_WBITS, bufsize=max(size, 1))  # one buffer, no growth


class _TruncationProbe:
    """The file-like pydicom reads through: notes short reads, checks the parse's bounds.

    pydicom stops silently (or with a warning) at a premature end of file; a complete
    object has at most one short read, the empty read of the tag after its last element.
    Every read checks the :class:`_ParseGuard` (cancelled, too many reads, too late).

    pydicom reads a deflated dataset with one ``read()`` of the rest of the file and
    inflates it whole, with no bound, into a buffer of its own that this probe would
    not see. That read (the one without a size) is inflated here instead, under the
    size limit and the guard, and kept in ``inflated``; pydicom is handed an empty
    deflate stream, and :func:`_read` parses ``inflated`` through a probe.
    """

    def __init__(
        self, fp: BinaryIO, inflate_limit: int, image_id: str | None, guard: _ParseGuard
    ) -> None:
        self._fp = fp
        self.name = getattr(fp, "name", "<bytes>")
        self.partial_reads = 0
        self.empty_reads = 0
        self.inflated: bytes | None = None
        self._inflate_limit = inflate_limit
        self._image_id = image_id
        self._guard = guard

    def read(self, size: int | None = -1) -> bytes:
        self._guard.check()
        data = self._fp.read(-1 if size is None else size)
        if size is None or size < 0:
            self.inflated = _inflate(data, self._inflate_limit, self._image_id, self._guard)
            return _EMPTY_DEFLATE
        if size > 0 and len(data) < size:
            if data:
                self.partial_reads += 1
            else:
                self.empty_reads += 1
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()

    @property
    def truncated(self) -> bool:
        return self.partial_reads > 0 or self.empty_reads > 1


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag in (0x7FE00010, 0x7FE00009, 0x7FE00008)


def _read_through(
    fp: BinaryIO,
    image_id: str | None,
    inflate_limit: int,
    guard: _ParseGuard,
    *,
    force: bool = False,
    stop_before_pixels: bool = False,
) -> tuple[Dataset, bool]:
    """``dcmread`` through a probe, deflated datasets inflated and parsed through one too.

    The dataset comes back as pydicom's own read would give it, and whether it was
    truncated.
    """
    probe = _TruncationProbe(fp, inflate_limit, image_id, guard)
    head = dcmread(probe, force=force, stop_before_pixels=stop_before_pixels)
    if probe.inflated is None:
        return head, probe.truncated
    # The dataset after the file meta, inflated: explicit VR little endian (PS3.5 A.5).
    inner = _TruncationProbe(io.BytesIO(probe.inflated), inflate_limit, image_id, guard)
    inner.name = probe.name
    probe.inflated = None
    stop_when = _at_pixel_data if stop_before_pixels else None
    dataset = read_dataset(
        cast(BinaryIO, inner), is_implicit_VR=False, is_little_endian=True, stop_when=stop_when
    )
    ds = FileDataset(inner, dataset, head.preamble, head.file_meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds, probe.truncated or inner.truncated


_OWN_ERRORS = (DecodeError, ImageTooLargeError, LoadTimeoutError, LoadCancelledError)


def _read(fp: BinaryIO, image_id: str | None, inflate_limit: int, guard: _ParseGuard) -> Dataset:
    try:
        try:
            ds, truncated = _read_through(fp, image_id, inflate_limit, guard)
        except InvalidDicomError:
            # No preamble or 'DICM' prefix: accept a bare dataset that starts like one.
            fp.seek(0)
            ds, truncated = _read_through(fp, image_id, inflate_limit, guard, force=True)
            first = next(iter(ds.keys()), None)
            if first is None or first.group not in (0x0002, 0x0008):
                raise DecodeError("not a DICOM Part 10 object", image_id=image_id) from None
    except MemoryError:
        raise
    except _OWN_ERRORS:
        raise
    except Exception as exc:
        raise DecodeError(f"unreadable DICOM object: {exc}", image_id=image_id) from exc
    if truncated:
        raise DecodeError("the DICOM object is truncated", image_id=image_id)
    return ds


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = to_string(element_value(meta, "TransferSyntaxUID")) if meta is not None else None
    if uid:
        return uid
    implicit, little = ds.original_encoding
    if implicit:
        return str(ImplicitVRLittleEndian)
    return str(ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian)


def _required_int(view: FrameView, keyword: str, image_id: str | None) -> int:
    value = view.integer(keyword)
    if value is None or value < 0:
        raise MetadataError(f"missing or invalid {keyword}", image_id=image_id)
    return value


def _check_frame_size(rows: int, columns: int, limits: Limits | None, image_id: str | None) -> None:
    if rows == 0 or columns == 0:
        raise MetadataError("Rows or Columns is zero", image_id=image_id)
    if limits is not None and rows * columns > limits.max_frame_pixels:
        raise ImageTooLargeError(
            f"frame of {rows}x{columns} pixels exceeds max_frame_pixels "
            f"({limits.max_frame_pixels})",
            image_id=image_id,
        )


def _native_frame_bits(view: FrameView, image_id: str | None) -> int:
    rows = _required_int(view, "Rows", image_id)
    columns = _required_int(view, "Columns", image_id)
    bits = _required_int(view, "BitsAllocated", image_id)
    samples = view.integer("SamplesPerPixel") or 1
    if bits < 1 or (bits != 1 and bits % 8):
        raise MetadataError(f"BitsAllocated {bits} is not 1 or a multiple of 8", image_id=image_id)
    values = rows * columns * samples
    if to_string(view.root_value("PhotometricInterpretation")) == "YBR_FULL_422":
        values = rows * columns * 2  # two chroma samples shared by each pixel pair
    return values * bits


class Part10Object:
    """A parsed Part 10 object: its dataset and its frames.

    ``frame(n)`` is safe to call from several threads.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        transfer_syntax_uid: str,
        pixel_keyword: str,
        number_of_frames: int,
        image_id: str | None,
        source_bytes: int,
    ) -> None:
        self.dataset = dataset
        self.transfer_syntax_uid = transfer_syntax_uid
        self.pixel_keyword = pixel_keyword
        self.number_of_frames = number_of_frames
        self.image_id = image_id
        element = dataset[pixel_keyword]
        self.is_encapsulated = bool(element.is_undefined_length)
        syntax = UID(transfer_syntax_uid)
        if syntax.is_transfer_syntax and syntax.is_encapsulated != self.is_encapsulated:
            kind = "encapsulated" if self.is_encapsulated else "native"
            raise DecodeError(
                f"{kind} pixel data does not fit transfer syntax {transfer_syntax_uid}",
                image_id=image_id,
            )
        self.little_endian = dataset.original_encoding[1] is not False
        raw = element.value
        if not isinstance(raw, (bytes, bytearray)):
            raise MetadataError(f"{pixel_keyword} has no value", image_id=image_id)
        self._buffer = memoryview(raw)
        self._lock = threading.Lock()
        self._index: FrameIndex | None = None
        self._frame_bits = 0
        self._swapped = False
        if not self.is_encapsulated:
            self._prepare_native(element.VR)
        overhead = max(0, source_bytes - len(raw))
        self.size_in_bytes = len(raw) + overhead + (len(self._buffer) if self._swapped else 0)

    def _prepare_native(self, vr: str) -> None:
        view = FrameView(self.dataset)
        self._frame_bits = _native_frame_bits(view, self.image_id)
        needed = (self._frame_bits * self.number_of_frames + 7) // 8
        if len(self._buffer) < needed:
            raise DecodeError(
                f"pixel data is truncated: {len(self._buffer)} of {needed} bytes",
                image_id=self.image_id,
            )
        if not self.little_endian and vr == "OW" and view.integer("BitsAllocated") == 8:
            # 8-bit samples in big endian 16-bit words: put them back in order once.
            even = len(self._buffer) - len(self._buffer) % 2
            swapped = np.frombuffer(self._buffer[:even], dtype=np.uint16).byteswap()
            self._buffer = memoryview(swapped.tobytes())
            self._swapped = True

    def frame(self, n: int) -> bytes | memoryview:
        """Frame ``n`` (1-based): a zero-copy view where possible, else bytes."""
        check_frame(n, self.number_of_frames, self.image_id)
        if not self.is_encapsulated:
            return self._native_frame(n)
        index = self._index
        if index is None:
            with self._lock:
                if self._index is None:
                    self._index = build_frame_index(
                        self._buffer,
                        self.dataset,
                        self.number_of_frames,
                        little_endian=self.little_endian,
                        image_id=self.image_id,
                    )
                index = self._index
        return index.frame(self._buffer, n, image_id=self.image_id)

    def _native_frame(self, n: int) -> bytes | memoryview:
        bits = self._frame_bits
        start = (n - 1) * bits
        if start % 8 == 0 and bits % 8 == 0:
            return self._buffer[start // 8 : (start + bits) // 8]
        # Bit-packed frames need not start on a byte: re-pack this one from bit 0.
        first, last = start // 8, (start + bits + 7) // 8
        unpacked = np.unpackbits(
            np.frombuffer(self._buffer[first:last], dtype=np.uint8), bitorder="little"
        )
        offset = start % 8
        return np.packbits(unpacked[offset : offset + bits], bitorder="little").tobytes()

    def pixel_params(self, frame: int = 1, *, limits: Limits | None = None) -> PixelParams:
        """:func:`pixel_params` of this object's dataset."""
        return pixel_params(
            self.dataset,
            self.transfer_syntax_uid,
            frame=frame,
            image_id=self.image_id,
            limits=limits,
        )

    def __repr__(self) -> str:
        kind = "encapsulated" if self.is_encapsulated else "native"
        return (
            f"Part10Object({self.image_id!r}, {self.transfer_syntax_uid}, "
            f"{self.number_of_frames} frame(s), {kind})"
        )


def read_header(
    path: str | os.PathLike[str],
    *,
    image_id: str | None = None,
    limits: Limits | None = None,
    cancel: threading.Event | None = None,
) -> Dataset:
    """The dataset of the Part 10 file at ``path``, read up to its pixel data (blocking).

    Read under the bounds :func:`parse_part10` sets (a deflated dataset's inflated
    size, ``max_parse_seconds``, the number of reads, ``cancel``). Raises
    NotFoundError for a missing file, ImageTooLargeError past a size bound,
    LoadTimeoutError past the deadline, LoadCancelledError once ``cancel`` is set and
    DecodeError for anything else unreadable.
    """
    limits = limits or Limits()
    guard = _ParseGuard(limits, image_id, cancel)
    try:
        with open(path, "rb") as fp:
            return _read_through(
                fp, image_id, limits.max_response_bytes, guard, stop_before_pixels=True
            )[0]
    except FileNotFoundError as exc:
        raise NotFoundError("no such file", image_id=image_id, url=os.fspath(path)) from exc
    except MemoryError:
        raise
    except _OWN_ERRORS:
        raise
    except Exception as exc:  # pydicom's and the OS's errors alike: the header is unreadable
        raise DecodeError(f"unreadable DICOM header: {exc}", image_id=image_id) from exc


def parse_part10(
    data: bytes | bytearray | memoryview | str | os.PathLike[str],
    *,
    image_id: str | None = None,
    limits: Limits | None = None,
    cancel: threading.Event | None = None,
) -> Part10Object:
    """Parse a Part 10 object from its bytes (wadouri) or a path (dicomfile).

    Blocking; run it in a worker thread. Raises MetadataError when the object has no
    pixel data or lacks the pixel module attributes needed to cut frames, DecodeError
    when it is truncated or unreadable, and ImageTooLargeError over ``limits`` (a
    deflated dataset may inflate to ``max_response_bytes``, the defaults' without them)
    or past :data:`MAX_PARSE_READS` reads. The parse stops with LoadTimeoutError after
    ``limits.max_parse_seconds`` and with LoadCancelledError at its next read once
    ``cancel`` is set (the load was cancelled: the thread need not parse on).
    """
    bounds = limits or Limits()
    guard = _ParseGuard(bounds, image_id, cancel)
    # An inflated (deflated) dataset may be as large as a response may be.
    inflate_limit = bounds.max_response_bytes
    if isinstance(data, (bytes, bytearray, memoryview)):
        source_bytes = len(data)
        ds = _read(io.BytesIO(data), image_id, inflate_limit, guard)
    else:
        try:
            with open(data, "rb") as fp:
                source_bytes = os.fstat(fp.fileno()).st_size
                ds = _read(fp, image_id, inflate_limit, guard)
        except FileNotFoundError as exc:
            path = os.fspath(data)
            raise NotFoundError("no such file", image_id=image_id, url=path) from exc
        except _OWN_ERRORS:
            raise  # LoadTimeoutError is an OSError too
        except (OSError, ValueError) as exc:  # ValueError: a NUL or lone surrogate in the path
            raise DecodeError(f"cannot read {os.fspath(data)!r}: {exc}", image_id=image_id) from exc
    keyword = next((k for k in _PIXEL_KEYWORDS if element_value(ds, k) is not None), None)
    if keyword is None:
        raise MetadataError("the DICOM object has no pixel data", image_id=image_id)
    frames = frame_count(ds)
    if frames < 1:
        raise MetadataError("NumberOfFrames is not a number", image_id=image_id)
    view = FrameView(ds)
    rows = _required_int(view, "Rows", image_id)
    columns = _required_int(view, "Columns", image_id)
    _check_frame_size(rows, columns, limits, image_id)
    try:
        return Part10Object(
            ds,
            transfer_syntax_uid=_transfer_syntax(ds),
            pixel_keyword=keyword,
            number_of_frames=frames,
            image_id=image_id,
            source_bytes=source_bytes,
        )
    except (MetadataError, DecodeError):
        raise
    except Exception as exc:
        raise DecodeError(f"unreadable pixel data: {exc}", image_id=image_id) from exc


def pixel_params(
    ds: Dataset,
    transfer_syntax_uid: str,
    *,
    frame: int = 1,
    image_id: str | None = None,
    limits: Limits | None = None,
) -> PixelParams:
    """The pixel module and modality LUT inputs a decode worker needs for ``frame``.

    The dataset is checked first, so that what is missing or unusable is named; the
    parameters are then those of the frame's metadata modules
    (:func:`~.modules.pixel_params_from_modules`). Rescale slope and intercept come
    from the frame's functional groups when the object has them.
    ``transfer_syntax_uid`` is reported as the syntax of the frame bytes: deflated and
    encapsulated-uncompressed objects give explicit VR little endian.
    """
    if any(element_value(ds, k) is not None for k in _PIXEL_KEYWORDS[1:]):
        raise DecodeError("float pixel data is not supported yet", image_id=image_id)
    view = FrameView(ds, frame)
    rows = _required_int(view, "Rows", image_id)
    columns = _required_int(view, "Columns", image_id)
    _check_frame_size(rows, columns, limits, image_id)
    for keyword in ("BitsAllocated", "SamplesPerPixel"):
        _required_int(view, keyword, image_id)
    photometric = to_string(view.value("PhotometricInterpretation"))
    if photometric is None:
        raise MetadataError("missing PhotometricInterpretation", image_id=image_id)
    if photometric == "PALETTE COLOR":
        try:
            palette = read_palette(ds, little_endian=ds.original_encoding[1] is not False)
        except PaletteError as exc:
            raise MetadataError(f"unusable palette: {exc}", image_id=image_id) from exc
        if palette is None:
            raise MetadataError("PALETTE COLOR without lookup tables", image_id=image_id)
    modules = metadata_modules(ds, frame=frame)
    return pixel_params_from_modules(modules, transfer_syntax_uid, image_id=image_id)
