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
nobody wants the result). Segments of a worker that dies are cleaned up by
multiprocessing's resource tracker at exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

__all__ = [
    "THRESHOLD",
    "SharedArray",
    "SharedBytes",
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
    """A numpy array waiting in a shared-memory segment."""

    name: str
    shape: tuple[int, ...]
    dtype: str


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


def _create(size: int) -> shared_memory.SharedMemory:
    name = segment_prefix() + secrets.token_hex(8)
    return shared_memory.SharedMemory(name=name, create=True, size=max(size, 1))


def _buffer(segment: shared_memory.SharedMemory) -> memoryview:
    buffer = segment.buf
    assert buffer is not None  # None only once closed
    return buffer


def release(segments: list[shared_memory.SharedMemory]) -> None:
    """Close and unlink segments this process created (idempotent)."""
    for segment in segments:
        with contextlib.suppress(FileNotFoundError, BufferError):
            segment.close()
            segment.unlink()
    segments.clear()


def share_args(
    args: tuple[Any, ...],
) -> tuple[tuple[Any, ...], list[shared_memory.SharedMemory]]:
    """``args`` with large byte buffers moved into segments; the segments to release."""
    segments: list[shared_memory.SharedMemory] = []
    shared = []
    try:
        for arg in args:
            if isinstance(arg, (bytes, bytearray, memoryview)) and len(arg) >= THRESHOLD:
                size = len(arg) if not isinstance(arg, memoryview) else arg.nbytes
                segment = _create(size)
                segments.append(segment)
                _buffer(segment)[:size] = arg if not isinstance(arg, memoryview) else arg.cast("B")
                shared.append(SharedBytes(segment.name, size))
            else:
                shared.append(arg)
    except BaseException:
        release(segments)
        raise
    return tuple(shared), segments


def _read_bytes(ref: SharedBytes) -> bytes:
    segment = shared_memory.SharedMemory(name=ref.name)
    try:
        # One copy out, so no view into the segment outlives this call.
        return bytes(_buffer(segment)[: ref.size])
    finally:
        segment.close()


def _export_array(array: np.ndarray[Any, Any]) -> SharedArray | np.ndarray[Any, Any]:
    if array.nbytes < THRESHOLD:
        return array
    segment = _create(array.nbytes)
    try:
        target: np.ndarray[Any, Any] = np.ndarray(array.shape, array.dtype, buffer=_buffer(segment))
        target[...] = array
        del target
        return SharedArray(segment.name, tuple(array.shape), array.dtype.str)
    finally:
        segment.close()


def _export(result: Any) -> Any:
    if isinstance(result, np.ndarray):
        return _export_array(result)
    if isinstance(result, tuple):
        return tuple(_export(item) for item in result)
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        changes = {
            f.name: _export_array(value)
            for f in dataclasses.fields(result)
            if isinstance(value := getattr(result, f.name), np.ndarray)
        }
        return dataclasses.replace(result, **changes) if changes else result
    return result


def call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Worker side: ``fn(*args)`` with shared inputs read in and large outputs shared."""
    real = tuple(_read_bytes(a) if isinstance(a, SharedBytes) else a for a in args)
    return _export(fn(*real))


def _take_array(ref: SharedArray, copy: bool) -> np.ndarray[Any, Any] | None:
    try:
        segment = shared_memory.SharedMemory(name=ref.name)
    except FileNotFoundError:
        return None
    try:
        if not copy:
            return None
        view: np.ndarray[Any, Any] = np.ndarray(
            ref.shape, np.dtype(ref.dtype), buffer=_buffer(segment)
        )
        array = view.copy()
        del view
        return array
    finally:
        segment.close()
        with contextlib.suppress(FileNotFoundError):
            segment.unlink()


def _walk(result: Any, copy: bool) -> Any:
    if isinstance(result, SharedArray):
        return _take_array(result, copy)
    if isinstance(result, tuple):
        return tuple(_walk(item, copy) for item in result)
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        changes = {
            f.name: _take_array(value, copy)
            for f in dataclasses.fields(result)
            if isinstance(value := getattr(result, f.name), SharedArray)
        }
        return dataclasses.replace(result, **changes) if changes else result
    return result


def materialize(result: Any) -> Any:
    """Parent side: copy shared arrays of a result back into numpy, and unlink them."""
    return _walk(result, copy=True)


def discard(result: Any) -> None:
    """Parent side: unlink the shared arrays of a result nobody will read."""
    _walk(result, copy=False)
