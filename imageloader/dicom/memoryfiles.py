"""``loader.files``: DICOM Part 10 files held in memory, as Cornerstone's ``fileManager``.

``image_id = loader.files.add(data)`` keeps the bytes (``bytes``, ``bytearray``,
``memoryview`` or a binary file object such as ``io.BytesIO`` or an upload's
spooled file) and returns ``dicomfile:N``, Cornerstone's form: ``N`` is a number
this loader hands out once (never reused, so a removed file's id never names
another). Its frames are ``dicomfile:N?frame=K`` (1-based) and load like any
``dicomfile:`` id: metadata modules, volumes, the decode pool.

A ``dicomfile:`` id whose rest is only digits names a file in memory; a relative
*path* made only of digits is written ``dicomfile:./0``. The ids are numbers, not
secrets: a service that keeps files for several users checks who may load which.

Bounded: the bytes held count against :attr:`~imageloader.limits.Limits.max_files_bytes`
(``add`` raises :class:`~imageloader.errors.ImageTooLargeError` past it), and
``remove`` releases a file with its parsed object, cached frames and metadata.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Protocol

from ..errors import ImageTooLargeError, NotFoundError

__all__ = ["MemoryFiles", "memory_key"]

#: The longest number an in-memory id carries (far more files than any process holds).
_MAX_DIGITS = 18
#: Bytes read from a file object at a time.
_CHUNK = 1 << 20


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def memory_key(path: str) -> str | None:
    """The in-memory file a ``dicomfile:`` id's path names (``"007"`` → ``"7"``), or None."""
    if path.isascii() and path.isdigit() and len(path.lstrip("0")) <= _MAX_DIGITS:
        return str(int(path))
    return None


class MemoryFiles:
    """Part 10 files in memory, by number; ``add`` → ``dicomfile:N``, ``remove`` releases."""

    def __init__(
        self,
        max_bytes: int,
        *,
        key_of: Callable[[str], str | None],
        on_remove: Callable[[str], None],
    ) -> None:
        #: The most bytes held at once.
        self.max_bytes = max_bytes
        self._files: dict[str, bytes] = {}
        self._next = 0
        self._bytes = 0
        self._key = key_of  # an imageId -> the key of the file in memory it names, or None
        self._on_remove = on_remove

    @property
    def size_bytes(self) -> int:
        """Bytes held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and self._key(image_id) in self._files

    def image_ids(self) -> list[str]:
        """The imageId of each file held (its first frame), oldest first."""
        return [f"dicomfile:{key}" for key in self._files]

    def add(self, data: bytes | bytearray | memoryview | _Readable) -> str:
        """Hold ``data`` (a Part 10 file's bytes or a binary file object); its imageId.

        The bytes are copied unless they are ``bytes`` already (the caller may go
        on changing a ``bytearray``). Nothing is parsed here: bytes that are not
        DICOM are a :class:`~imageloader.errors.DecodeError` when loaded.
        """
        room = self.max_bytes - self._bytes
        if isinstance(data, bytes):
            blob = data
        elif isinstance(data, bytearray | memoryview):
            view = memoryview(data)
            if view.nbytes > room:
                self._refuse(view.nbytes)
            blob = view.tobytes()
        elif isinstance(data, str) or not callable(getattr(data, "read", None)):
            hint = "; a path is loaded as dicomfile:<path>" if isinstance(data, str) else ""
            raise TypeError(
                "loader.files.add takes bytes, bytearray, memoryview or a binary file "
                f"object, not {type(data).__name__}{hint}"
            )
        else:
            blob = _read_bounded(data, room, self._refuse)
        if len(blob) > room:
            self._refuse(len(blob))
        key = str(self._next)
        self._next += 1
        self._files[key] = blob
        self._bytes += len(blob)
        return f"dicomfile:{key}"

    def remove(self, image_id: str) -> bool:
        """Release the file ``image_id`` names (any of its frames' ids); whether it was held.

        Its parsed object, cached frames and metadata go too; loading it afterwards
        is a :class:`~imageloader.errors.NotFoundError`.
        """
        key = self._key(image_id)
        blob = self._files.pop(key, None) if key is not None else None
        if blob is None or key is None:
            return False
        self._bytes -= len(blob)
        self._on_remove(key)
        return True

    def clear(self) -> None:
        """Release every file."""
        for key in list(self._files):
            self.remove(f"dicomfile:{key}")

    def get(self, key: str, image_id: str) -> bytes:
        """The bytes of file ``key``; NotFoundError naming ``image_id`` if not held."""
        blob = self._files.get(key)
        if blob is None:
            raise NotFoundError(
                f"no file dicomfile:{key} in loader.files (removed, or added to another loader)",
                image_id=image_id,
            )
        return blob

    def _refuse(self, size: int) -> None:
        raise ImageTooLargeError(
            f"loader.files holds {self._bytes} bytes; {size} more would pass "
            f"Limits.max_files_bytes ({self.max_bytes}): remove files first"
        )


def _read_bounded(source: _Readable, room: int, refuse: Callable[[int], None]) -> bytes:
    """Everything ``source`` reads, refused as soon as it passes ``room`` bytes."""
    out = io.BytesIO()
    while True:
        chunk = source.read(_CHUNK)
        if not chunk:
            return out.getvalue()
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(f"the file object read {type(chunk).__name__}, not bytes")
        out.write(chunk)
        if out.tell() > room:
            refuse(out.tell())
