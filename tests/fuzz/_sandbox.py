"""Run probes on hostile input in a child process, so a crash or a hang is one failed case.

Native codecs (libjpeg-turbo, OpenJPEG, OpenJPH, CharLS, Pillow's C code) can crash
on a damaged codestream; a segfault in the pytest process would end the whole run
and name no input. Here one long-lived child (spawned: clean, no inherited locks)
runs probes from :mod:`tests.fuzz._probes` one at a time:

- a probe that returns gives its summary, one that raises gives a
  :class:`Raised` (type, whether it is ours, the cause chain, the traceback);
- a child that dies (signal, abort, out of memory) gives a :class:`Crashed` with its
  exit code, and the next case starts a fresh child;
- a case that runs past its timeout gets the child killed and gives a :class:`Hung`.

The child's address space is capped (``RLIMIT_AS``) a little above what it holds
after importing the decode stack, so an allocation driven by a hostile header
fails fast with a MemoryError (which the properties reject) instead of swapping
the machine.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
import traceback
import warnings
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

#: Address space the child may add on top of what it holds once imports are done.
HEADROOM_BYTES = int(os.environ.get("IMAGELOADER_FUZZ_HEADROOM_MB", "512")) << 20


@dataclass(frozen=True)
class Returned:
    """The probe returned ``value`` after ``seconds``."""

    value: Any
    seconds: float


@dataclass(frozen=True)
class Raised:
    """The probe raised: ``typed`` says whether it was an ImageLoaderError."""

    type_name: str
    typed: bool
    message: str
    image_id: str | None
    causes: tuple[str, ...]
    traceback: str
    seconds: float
    #: A MemoryError (or a codec's bad_alloc) anywhere in the chain or the message.
    memory: bool = False


@dataclass(frozen=True)
class Crashed:
    """The child died while running the case."""

    exitcode: int | None
    seconds: float


@dataclass(frozen=True)
class Hung:
    """The case ran past ``timeout`` seconds; the child was killed."""

    timeout: float
    seconds: float


Outcome = Returned | Raised | Crashed | Hung

_MEMORY_WORDS = (
    "MemoryError",
    "bad_alloc",
    "Cannot allocate memory",
    "out of memory",
    "insufficient memory",
)


def describe(exc: BaseException, seconds: float) -> Raised:
    """A picklable record of ``exc`` (the exception itself may not pickle)."""
    from imageloader.errors import ImageLoaderError

    causes: list[str] = []
    seen: set[int] = set()
    link: BaseException | None = exc.__cause__ or exc.__context__
    while link is not None and id(link) not in seen and len(causes) < 16:
        seen.add(id(link))
        causes.append(f"{type(link).__module__}.{type(link).__qualname__}")
        link = link.__cause__ or link.__context__
    message = str(exc)
    memory = isinstance(exc, MemoryError) or any("MemoryError" in c for c in causes)
    memory = memory or any(word in message for word in _MEMORY_WORDS)
    image_id = getattr(exc, "image_id", None)
    return Raised(
        type_name=f"{type(exc).__module__}.{type(exc).__qualname__}",
        typed=isinstance(exc, ImageLoaderError),
        message=message[:2000],
        image_id=image_id if isinstance(image_id, str) else None,
        causes=tuple(causes),
        traceback="".join(traceback.format_exception(exc))[-6000:],
        seconds=seconds,
        memory=memory,
    )


def _vm_size() -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _child_main(conn: Connection, headroom: int) -> None:
    """The child's loop: ``(probe name, args)`` in, an outcome out; None ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Decode workers do not turn warnings into errors (pydicom warns about
    # non-conformant RLE padding, say): neither does the sandbox, and it stays quiet.
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)  # nibabel and pydicom complain about every damaged file
    from tests.fuzz import _probes

    _probes.warm_up()
    size = _vm_size()
    if size is not None and headroom > 0:
        import resource

        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (size + headroom, size + headroom))
    conn.send("ready")
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        name, args = message
        start = time.perf_counter()
        try:
            value = _probes.PROBES[name](*args)
        except BaseException as exc:  # the record says what it was; nothing escapes
            outcome: Outcome = describe(exc, time.perf_counter() - start)
        else:
            outcome = Returned(value, time.perf_counter() - start)
        conn.send(outcome)


@dataclass
class Sandbox:
    """One child process that runs probes; restarted after a crash or a hang."""

    headroom: int = HEADROOM_BYTES
    start_timeout: float = 120.0
    _process: Any = field(default=None, init=False, repr=False)
    _conn: Connection | None = field(default=None, init=False, repr=False)
    starts: int = field(default=0, init=False)

    def _start(self) -> Connection:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=_child_main, args=(child, self.headroom), name="imageloader-fuzz", daemon=True
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        self.starts += 1
        if not parent.poll(self.start_timeout) or parent.recv() != "ready":
            self.close()
            raise RuntimeError("the fuzz sandbox did not start")
        return parent

    def run(self, name: str, *args: Any, timeout: float) -> Outcome:
        """Run probe ``name`` on ``args`` in the child; never raises for what the probe does."""
        conn = self._conn if self._process is not None and self._process.is_alive() else None
        if conn is None:
            self.close()
            conn = self._start()
        start = time.perf_counter()
        conn.send((name, args))
        if not conn.poll(timeout):
            self.close(kill=True)
            return Hung(timeout, time.perf_counter() - start)
        try:
            outcome: Outcome = conn.recv()
        except (EOFError, OSError):
            process = self._process
            process.join(10)
            exitcode = process.exitcode
            self.close(kill=True)
            return Crashed(exitcode, time.perf_counter() - start)
        return outcome

    def close(self, *, kill: bool = False) -> None:
        """Stop the child and wait for it (kill it when it may be stuck)."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            if not kill:
                with contextlib.suppress(OSError, ValueError):
                    conn.send(None)
            conn.close()
        if process is None:
            return
        process.join(0 if kill else 10)
        if process.is_alive():
            process.kill()
            process.join(10)
        process.close()
