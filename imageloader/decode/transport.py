"""Frames in, pixels out: through shared memory rather than the executor's pipes.

A 512 KiB frame pickled through a ``ProcessPoolExecutor`` pipe costs about 0.9 ms
of round trip and blocks the worker while the parent drains it; a shared-memory
copy costs 0.01 ms (benchmarks/results). Large ``bytes``/``memoryview`` arguments
travel as :class:`SharedBytes` and large array fields of a result (a dataclass such
as :class:`~imageloader.decode.params.DecodedFrame`, a bare array, or a tuple of them) as
:class:`SharedArray`; what crosses the pipe is a few hundred bytes, written at once,
so a worker killed mid-task can never leave half a message behind.

Ownership: the parent creates and unlinks input segments; the worker creates output
segments and the parent copies them out and unlinks them (or discards them when
nobody wants the result).

Segments are files in ``/dev/shm`` opened directly, not through
``multiprocessing.shared_memory``: its resource tracker costs two pipe writes to
another process per segment (register, and a liveness probe), each of which woke the
tracker on a busy machine — 1.8 ms of the event loop's time per frame in a bulk
prefetch on 2 cores, most of the main process's cost. Names carry who made them
(:func:`segment_prefix`, then the maker's pid), so the pool sweeps what a dead worker
left (:func:`sweep`) and, when it starts, what dead processes left; where there is no
``/dev/shm`` (not Linux), ``multiprocessing.shared_memory`` is used as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any, Protocol

import numpy as np

__all__ = [
    "THRESHOLD",
    "SharedArray",
    "SharedBytes",
    "Slot",
    "call",
    "discard",
    "materialize",
    "release",
    "share_args",
]

#: Smaller values go through the pipe: a segment costs a few system calls.
THRESHOLD = 32 * 1024


@dataclass(frozen=True, slots=True)
class SharedBytes:
    """Bytes waiting in a shared-memory segment."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class SharedArray:
    """A numpy array waiting in a shared-memory segment (``in_slot``: the task's slot)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    in_slot: bool = False


#: The process whose loader owns the segments (set in decode workers to their parent).
_owner: int | None = None


def set_owner(pid: int) -> None:
    """Name this process's segments after ``pid`` (a decode worker: the pool's process)."""
    global _owner
    _owner = pid


def segment_prefix(owner: int | None = None) -> str:
    """The name prefix of the segments a process's decode pool and its workers make.

    Segments are named after the process that owns the pool, so one left in
    ``/dev/shm`` says whose it is, and a leak check can count only its own.
    """
    pid = owner if owner is not None else _owner if _owner is not None else os.getpid()
    return f"imageloader-{pid}-"


#: Where POSIX shared memory lives on Linux (``shm_open`` opens files here).
SHM_DIR = "/dev/shm"
_DIRECT = os.path.isdir(SHM_DIR)


class Segment(Protocol):
    """A shared-memory segment: its name, its bytes, closing and unlinking."""

    @property
    def name(self) -> str: ...

    @property
    def buf(self) -> memoryview | None: ...

    def close(self) -> None: ...

    def unlink(self) -> None: ...


class _ShmFile:
    """A segment as a file of ``/dev/shm``, mapped; no resource tracker involved."""

    __slots__ = ("_map", "buf", "name", "size")

    def __init__(self, name: str, size: int | None = None) -> None:
        self.name = name
        path = os.path.join(SHM_DIR, name)
        flags = os.O_RDWR | os.O_NOFOLLOW
        if size is not None:
            flags |= os.O_CREAT | os.O_EXCL
        fd = os.open(path, flags, 0o600)
        try:
            if size is not None:
                os.ftruncate(fd, size)
            else:
                size = os.fstat(fd).st_size
            self._map: mmap.mmap | None = mmap.mmap(fd, size)
            self.size = size
        except BaseException:
            if flags & os.O_CREAT:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        finally:
            os.close(fd)
        self.buf: memoryview | None = memoryview(self._map)

    def close(self) -> None:
        if self.buf is not None:
            self.buf.release()
            self.buf = None
        if self._map is not None:
            self._map.close()
            self._map = None

    def unlink(self) -> None:
        os.unlink(os.path.join(SHM_DIR, self.name))


def _open(name: str) -> Segment:
    if _DIRECT:
        return _ShmFile(name)
    return shared_memory.SharedMemory(name=name)


def _create(size: int) -> Segment:
    name = f"{segment_prefix()}{os.getpid()}-{secrets.token_hex(8)}"
    if _DIRECT:
        return _ShmFile(name, max(size, 1))
    return shared_memory.SharedMemory(name=name, create=True, size=max(size, 1))


def sweep(owner: int | None = None, maker: int | None = None) -> int:
    """Unlink segments left in ``/dev/shm``; how many.

    With ``maker``: those a (dead) decode worker of ``owner``'s pool made. Without:
    those of every imageloader process that is no longer running (a service killed
    with SIGKILL leaves its segments in flight behind). Segments of live processes
    are never touched.
    """
    if not _DIRECT:
        return 0
    swept = 0
    prefix = "imageloader-"
    with contextlib.suppress(OSError):
        names = os.listdir(SHM_DIR)
        for name in names:
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("-")
            if len(parts) < 2 or not parts[0].isdigit():
                continue
            pool = int(parts[0])
            if maker is not None:
                made_by = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None
                stale = pool == (owner or os.getpid()) and made_by == maker
            else:
                stale = not _alive(pool)
            if stale:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(SHM_DIR, name))
                    swept += 1
    return swept


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _buffer(segment: Segment) -> memoryview:
    buffer = segment.buf
    assert buffer is not None  # None only once closed
    return buffer


def release(segments: list[Segment]) -> None:
    """Close and unlink segments this process created (idempotent)."""
    for segment in segments:
        with contextlib.suppress(FileNotFoundError, BufferError):
            segment.close()
            segment.unlink()
    segments.clear()


class Slot:
    """Two segments the parent reuses task after task: a frame in, pixels out.

    Making a segment per frame cost more than the decode's own transfer: a fresh
    tmpfs file is allocated, zeroed, faulted into both processes, unmapped and freed
    each time (1 ms of the event loop's CPU for a 512² CT frame on 2 cores). A slot's
    pages stay mapped in the parent and, once seen, in the worker (which keeps a few
    mappings open), so a frame costs two copies. Each decode worker has its own slots
    (``depth`` at most in use), grown to the largest frame seen up to :data:`SLOT_MAX`;
    larger frames, and the rare second large argument, get segments of their own.
    """

    __slots__ = ("input", "output", "output_wanted")

    def __init__(self) -> None:
        self.input: _ShmFile | None = None
        self.output: _ShmFile | None = None
        #: Bytes the last result needed that the output segment could not hold.
        self.output_wanted = SLOT_OUTPUT_START

    def take_input(self, size: int) -> _ShmFile | None:
        """The input segment, at least ``size`` bytes (None: too large to keep)."""
        if not _DIRECT or size > SLOT_MAX:
            return None
        if self.input is None or self.input.size < size:
            self.input = _replace(self.input, _grown(size))
        return self.input

    def output_ref(self) -> SharedBytes | None:
        """Where the worker may write its largest result array (None: no slot)."""
        if not _DIRECT:
            return None
        output = self.output
        if output is None or output.size < self.output_wanted:
            output = self.output = _replace(output, _grown(self.output_wanted))
        assert output is not None
        return SharedBytes(output.name, output.size)

    def destroy(self) -> None:
        """Unlink both segments (the slot may be used again: it makes new ones)."""
        self.input = _replace(self.input, None)
        self.output = _replace(self.output, None)


#: The largest slot segment kept for reuse (each side).
SLOT_MAX = 8 << 20
#: The first output segment's size: a 512² RGB frame fits.
SLOT_OUTPUT_START = 1 << 20


def _grown(size: int) -> int:
    """``size`` rounded up to a power of two (64 KiB at least), so a slot grows rarely."""
    return max(64 << 10, 1 << (max(size, 1) - 1).bit_length())


def _replace(old: _ShmFile | None, size: int | None) -> _ShmFile | None:
    if old is not None:
        old.close()
        with contextlib.suppress(OSError):
            old.unlink()
    if size is None:
        return None
    segment = _create(size)
    assert isinstance(segment, _ShmFile)
    return segment


def share_args(
    args: tuple[Any, ...], slot: Slot | None = None
) -> tuple[tuple[Any, ...], list[Segment]]:
    """``args`` with large byte buffers moved into shared memory; the segments to release.

    The first large buffer goes into ``slot``'s input segment when it fits (released
    with the slot, not here); any other gets a segment of its own.
    """
    segments: list[Segment] = []
    shared = []
    try:
        for arg in args:
            if isinstance(arg, (bytes, bytearray, memoryview)) and len(arg) >= THRESHOLD:
                size = len(arg) if not isinstance(arg, memoryview) else arg.nbytes
                segment: Segment | None = slot.take_input(size) if slot is not None else None
                if segment is None:
                    segment = _create(size)
                    segments.append(segment)
                else:
                    slot = None  # one argument per slot
                _buffer(segment)[:size] = arg if not isinstance(arg, memoryview) else arg.cast("B")
                shared.append(SharedBytes(segment.name, size))
            else:
                shared.append(arg)
    except BaseException:
        release(segments)
        raise
    return tuple(shared), segments


# -- worker side ------------------------------------------------------------------------
#: Slot segments this worker has mapped, kept open (most recently used last): a worker
#: sees its own slots only (input and output of ``depth`` of them), and a segment the
#: parent replaced (grown) is unlinked and leaves when pushed out.
_mapped: OrderedDict[str, _ShmFile] = OrderedDict()
_MAPPED_MAX = 8


def _slot_segment(name: str) -> _ShmFile:
    segment = _mapped.get(name)
    if segment is None:
        segment = _mapped[name] = _ShmFile(name)
        while len(_mapped) > _MAPPED_MAX:
            _mapped.popitem(last=False)[1].close()
    else:
        _mapped.move_to_end(name)
    return segment


def _read_bytes(ref: SharedBytes) -> bytes:
    if _DIRECT:
        # One copy out, so no view into the segment outlives this call.
        return bytes(_buffer(_slot_segment(ref.name))[: ref.size])
    segment = _open(ref.name)
    try:
        return bytes(_buffer(segment)[: ref.size])
    finally:
        segment.close()


class _Exporter:
    """Moves a result's large arrays into shared memory: the first that fits the slot there."""

    def __init__(self, out: SharedBytes | None) -> None:
        self.out = out

    def array(self, array: np.ndarray[Any, Any]) -> SharedArray | np.ndarray[Any, Any]:
        if array.nbytes < THRESHOLD:
            return array
        out, shape, dtype = self.out, tuple(array.shape), array.dtype.str
        if out is not None and array.nbytes <= out.size:
            self.out = None
            target: np.ndarray[Any, Any] = np.ndarray(
                array.shape, array.dtype, buffer=_buffer(_slot_segment(out.name))
            )
            target[...] = array
            del target
            return SharedArray(out.name, shape, dtype, in_slot=True)
        segment = _create(array.nbytes)
        try:
            target = np.ndarray(array.shape, array.dtype, buffer=_buffer(segment))
            target[...] = array
            del target
            return SharedArray(segment.name, shape, dtype)
        finally:
            segment.close()

    def result(self, result: Any) -> Any:
        if isinstance(result, np.ndarray):
            return self.array(result)
        if isinstance(result, tuple):
            return tuple(self.result(item) for item in result)
        if dataclasses.is_dataclass(result) and not isinstance(result, type):
            changes = {
                f.name: self.array(value)
                for f in dataclasses.fields(result)
                if isinstance(value := getattr(result, f.name), np.ndarray)
            }
            return dataclasses.replace(result, **changes) if changes else result
        return result


def call(fn: Callable[..., Any], args: tuple[Any, ...], out: SharedBytes | None = None) -> Any:
    """Worker side: ``fn(*args)`` with shared inputs read in and large outputs shared.

    ``out`` is the slot's output segment: the first large array that fits goes there.
    """
    real = tuple(_read_bytes(a) if isinstance(a, SharedBytes) else a for a in args)
    return _Exporter(out).result(fn(*real))


# -- parent side ------------------------------------------------------------------------
def _take_array(ref: SharedArray, copy: bool, slot: Slot | None) -> np.ndarray[Any, Any] | None:
    if ref.in_slot:
        if not copy or slot is None or slot.output is None or slot.output.name != ref.name:
            return None
        view: np.ndarray[Any, Any] = np.ndarray(
            ref.shape, np.dtype(ref.dtype), buffer=_buffer(slot.output)
        )
        array = view.copy()
        del view
        return array
    if slot is not None:  # it did not fit the slot: give the slot room for the next one
        nbytes = int(np.prod(ref.shape)) * np.dtype(ref.dtype).itemsize
        slot.output_wanted = max(slot.output_wanted, min(nbytes, SLOT_MAX))
    try:
        segment = _open(ref.name)
    except FileNotFoundError:
        return None
    try:
        if not copy:
            return None
        view = np.ndarray(ref.shape, np.dtype(ref.dtype), buffer=_buffer(segment))
        array = view.copy()
        del view
        return array
    finally:
        segment.close()
        with contextlib.suppress(FileNotFoundError):
            segment.unlink()


def _walk(result: Any, copy: bool, slot: Slot | None) -> Any:
    if isinstance(result, SharedArray):
        return _take_array(result, copy, slot)
    if isinstance(result, tuple):
        return tuple(_walk(item, copy, slot) for item in result)
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        changes = {
            f.name: _take_array(value, copy, slot)
            for f in dataclasses.fields(result)
            if isinstance(value := getattr(result, f.name), SharedArray)
        }
        return dataclasses.replace(result, **changes) if changes else result
    return result


def materialize(result: Any, slot: Slot | None = None) -> Any:
    """Parent side: copy shared arrays of a result back into numpy, unlinking their own."""
    return _walk(result, True, slot)


def discard(result: Any, slot: Slot | None = None) -> None:
    """Parent side: unlink the shared arrays of a result nobody will read."""
    _walk(result, False, slot)
