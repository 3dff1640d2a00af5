"""Module-level task functions for DecodePool tests (picklable by reference)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from imageloader.errors import DecodeError


def echo(value: object, delay: float = 0.0) -> object:
    if delay:
        time.sleep(delay)
    return value


def where() -> tuple[int, str]:
    return os.getpid(), threading.current_thread().name


def touch(path: str, delay: float = 0.0) -> str:
    Path(path).write_text("ran")
    if delay:
        time.sleep(delay)
    return path


def crash(delay: float = 0.05) -> None:
    time.sleep(delay)
    os.kill(os.getpid(), signal.SIGKILL)


def hang() -> None:
    time.sleep(3600)


def fail_foreign() -> None:
    raise ValueError("codec exploded")


def fail_typed() -> None:
    raise DecodeError("bad codestream", image_id="x:1")


def checksum_and_array(data: bytes, delay: float = 0.0) -> tuple[int, object]:
    """Returns a dataclass-free tuple: the bytes' sum, and a large array derived from them."""
    import numpy as np

    if delay:
        time.sleep(delay)
    array = np.frombuffer(data, dtype=np.uint8).astype(np.uint16) * 3
    return int(array.sum()), array


def big_array(n: int, delay: float = 0.0) -> object:
    import numpy as np

    if delay:
        time.sleep(delay)
    return np.arange(n, dtype=np.int32)


def segment_prefix() -> str:
    """The prefix this process names its shared-memory segments with."""
    from imageloader.decode import transport

    return transport.segment_prefix()


def leave_segment_and_hang(marks: str) -> str:
    """Make an output segment as a result would, then hang until killed: what a decode
    killed mid-write leaves behind. Its name is written into the folder ``marks`` (not
    next to it in /dev/shm, where the pool's sweep would take the mark too)."""
    from imageloader.decode import transport

    segment = transport._create(4096)
    segment.close()
    Path(marks, segment.name).touch()
    time.sleep(3600)
    return segment.name
