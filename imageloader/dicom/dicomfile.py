"""``dicomfile:/abs/path/file.dcm[?frame=N]``: DICOM Part 10 files on local disk or in memory.

Frames are 1-based, as DICOM and WADO-RS count them (no ``?frame``: frame 1). The
file is read and parsed in a worker thread, once, however many of its frames load;
with an access policy that sets file roots, the path must resolve (symlinks
followed) inside one of them. ``dicomfile:N`` (digits only) names a file held in
memory by ``loader.files`` (:mod:`.memoryfiles`), Cornerstone's ``dicomfile:0``; a
relative path of digits is written ``dicomfile:./0``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import TYPE_CHECKING

from ..context import LoadContext
from ..errors import InvalidImageIdError
from ..image import Image
from ..imageid import check_frame
from ..limits import Limits
from ..objectcache import ObjectCache
from ..registry import split_scheme
from .frames import Part10Loader, parse_frame_number, read_part10, run_in_own_thread
from .memoryfiles import MemoryFiles, memory_key
from .modules import metadata_modules, metadata_modules_by_frame
from .part10 import Part10Object, read_header

if TYPE_CHECKING:
    from ..context import LoaderServices

__all__ = ["DicomFileLoader", "parse_dicomfile_id"]

SCHEME = "dicomfile"


def parse_dicomfile_id(image_id: str) -> tuple[str, int]:
    """``dicomfile:/a/b.dcm?frame=3`` → ``("/a/b.dcm", 3)``."""
    _, rest = split_scheme(image_id)
    path, sep, query = rest.partition("?frame=")
    try:
        # No file name holds a NUL, or a lone surrogate other than one standing for
        # an undecodable byte of a file name (as os.fsdecode writes them).
        named = b"\x00" not in os.fsencode(path)
    except UnicodeEncodeError:
        named = False
    if not named:
        raise InvalidImageIdError("not a file path", image_id=image_id)
    return path, parse_frame_number(query if sep else None, image_id)


#: Keys of files in memory start with NUL, which no path holds.
_MEMORY = "\x00memory:"


def _key_of(image_id: str) -> str | None:
    """The key of the object ``image_id``'s frame is cut from: its path, or its file in memory."""
    scheme, _ = split_scheme(image_id)
    if scheme != SCHEME:
        return None
    path = parse_dicomfile_id(image_id)[0]
    number = memory_key(path)
    return path if number is None else _MEMORY + number


def _memory_key_of(image_id: str) -> str | None:
    """The number of the file in memory ``image_id`` names, or None."""
    try:
        key = _key_of(image_id)
    except InvalidImageIdError:
        return None
    return key[len(_MEMORY) :] if key is not None and key.startswith(_MEMORY) else None


def _read_header(
    path: str,
    image_id: str,
    limits: Limits | None = None,
    cancel: threading.Event | None = None,
) -> list[dict[str, object]]:
    # read_header bounds a deflated dataset's inflated size (pydicom's own read does
    # not), the parse's time and reads, under the loader's limits.
    header = read_header(path, image_id=image_id, limits=limits, cancel=cancel)
    return metadata_modules_by_frame(header, image_id=image_id)


class DicomFileLoader(Part10Loader):
    """The ``dicomfile:`` loader of one ImageLoader: files in memory, parsed files, read headers."""

    def __init__(self, services: LoaderServices) -> None:
        super().__init__(services, _key_of)
        self._services = services
        #: ``loader.files``: Part 10 files in memory, ``dicomfile:N``.
        self.files = MemoryFiles(
            services.limits.max_files_bytes, key_of=_memory_key_of, on_remove=self._forget
        )
        #: Every frame's modules of files whose header alone was read: metadata, so
        #: held within the loader's metadata bound (~4 KB a frame).
        limits = services.limits
        self.headers: ObjectCache[list[dict[str, object]]] = ObjectCache(
            max_entries=limits.dataset_cache_entries * 64,
            max_bytes=limits.max_metadata_bytes,
            size_of=lambda m: 4096 * len(m),
        )

    async def aclose(self) -> None:
        """Drop the files and headers held."""
        await super().aclose()
        self.headers.clear()
        self.files.clear()

    def _forget(self, number: str) -> None:
        """A file in memory was removed: so are its parsed object, cached frames, metadata."""
        key = _MEMORY + number

        def named(image_id: str) -> bool:
            try:
                return _key_of(image_id) == key
            except InvalidImageIdError:
                return False

        self.objects.discard(key)
        cache, store = self._services.cache, self._services.metadata.store
        for image_id in [i for i in cache.image_ids() if named(i)]:
            cache.remove(image_id)
        for image_id in [i for i in store.image_ids() if named(i)]:
            store.remove(image_id)

    async def _in_memory(self, number: str, image_id: str, ctx: LoadContext) -> Part10Object:
        """The parsed file in memory ``number`` (parsed once for all its frames)."""

        async def parse() -> Part10Object:
            return await read_part10(self.files.get(number, image_id), ctx, image_id)

        obj = await self.objects.get(_MEMORY + number, parse, image_id=image_id)
        self.files.get(number, image_id)  # removed while it was parsed
        return obj

    async def load(self, image_id: str, ctx: LoadContext) -> Image:
        """One frame of a local Part 10 file, or of one in memory."""
        path, frame = parse_dicomfile_id(image_id)
        number = memory_key(path)
        if number is not None:
            obj = await self._in_memory(number, image_id, ctx)

            async def held() -> Part10Object:
                return obj

            image = await self.decode_frame(image_id, ctx, _MEMORY + number, held, frame)
            # Removed while it decoded: the image must not be cached under a dead id.
            self.files.get(number, image_id)
            return image

        async def fetch() -> Part10Object:
            # Only when the file is not held already: a held one passed this check
            # (the policy does not change) and its other frames need no thread hop.
            real = await asyncio.to_thread(ctx.access.resolve_path, path, image_id=image_id)
            return await read_part10(str(real), ctx, image_id)

        return await self.decode_frame(image_id, ctx, path, fetch, frame)

    async def load_metadata(self, image_id: str, ctx: LoadContext) -> None:
        """Register the frame's metadata modules from the file's header (no pixel data read)."""
        path, frame = parse_dicomfile_id(image_id)
        number = memory_key(path)
        if number is not None:  # in memory: parsing it all costs no read
            obj = await self._in_memory(number, image_id, ctx)
            check_frame(frame, obj.number_of_frames, image_id)
            ctx.metadata.store.add(image_id, metadata_modules(obj.dataset, frame=frame))
            return
        real = await asyncio.to_thread(ctx.access.resolve_path, path, image_id=image_id)

        async def read() -> list[dict[str, object]]:
            cancel = threading.Event()
            try:
                return await run_in_own_thread(
                    lambda: _read_header(str(real), image_id, ctx.limits, cancel),
                    "imageloader-header",
                )
            finally:
                cancel.set()  # a cancelled read stops at its next read

        frames = await self.headers.get(path, read)
        check_frame(frame, len(frames), image_id)
        ctx.metadata.store.add(image_id, frames[frame - 1])
