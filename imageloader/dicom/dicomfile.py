"""``dicomfile:/abs/path/file.dcm[?frame=N]``: DICOM Part 10 files on local disk.

Frames are 1-based, as DICOM and WADO-RS count them (no ``?frame``: frame 1). The
file is read and parsed in a worker thread, once, however many of its frames load;
with an access policy that sets file roots, the path must resolve (symlinks
followed) inside one of them.
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
from .modules import metadata_modules_by_frame
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


def _key_of(image_id: str) -> str | None:
    scheme, _ = split_scheme(image_id)
    return parse_dicomfile_id(image_id)[0] if scheme == SCHEME else None


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
    """The ``dicomfile:`` loader of one ImageLoader: parsed files and read headers."""

    def __init__(self, services: LoaderServices) -> None:
        super().__init__(services, _key_of)
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

    async def load(self, image_id: str, ctx: LoadContext) -> Image:
        """One frame of a local Part 10 file."""
        path, frame = parse_dicomfile_id(image_id)

        async def fetch() -> Part10Object:
            # Only when the file is not held already: a held one passed this check
            # (the policy does not change) and its other frames need no thread hop.
            real = await asyncio.to_thread(ctx.access.resolve_path, path, image_id=image_id)
            return await read_part10(str(real), ctx, image_id)

        return await self.decode_frame(image_id, ctx, path, fetch, frame)

    async def load_metadata(self, image_id: str, ctx: LoadContext) -> None:
        """Register the frame's metadata modules from the file's header (no pixel data read)."""
        path, frame = parse_dicomfile_id(image_id)
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
