"""``dicomfile:/abs/path/file.dcm[?frame=N]``: DICOM Part 10 files on local disk.

Frames are 1-based, as DICOM and WADO-RS count them (no ``?frame``: frame 1). The
file is read and parsed in a worker thread, once, however many of its frames load;
with an access policy that sets file roots, the path must resolve (symlinks
followed) inside one of them.
"""

from __future__ import annotations

import asyncio

from ..image import Image
from ..loader import LoadContext
from ..registry import split_scheme
from .frames import decode_part10_frame, parse_frame_number, part10_objects, read_part10
from .part10 import Part10Object

__all__ = ["load_dicomfile", "parse_dicomfile_id"]

SCHEME = "dicomfile"


def parse_dicomfile_id(image_id: str) -> tuple[str, int]:
    """``dicomfile:/a/b.dcm?frame=3`` → ``("/a/b.dcm", 3)``."""
    _, rest = split_scheme(image_id)
    path, sep, query = rest.partition("?frame=")
    return path, parse_frame_number(query if sep else None, image_id)


def _key_of(image_id: str) -> str | None:
    scheme, _ = split_scheme(image_id)
    return parse_dicomfile_id(image_id)[0] if scheme == SCHEME else None


async def load_dicomfile(image_id: str, ctx: LoadContext) -> Image:
    """The ``dicomfile:`` loader."""
    path, frame = parse_dicomfile_id(image_id)
    real = await asyncio.to_thread(ctx.access.resolve_path, path, image_id=image_id)

    async def fetch() -> Part10Object:
        return await read_part10(str(real), ctx, image_id)

    objects = part10_objects(ctx, SCHEME, _key_of)
    return await decode_part10_frame(image_id, ctx, objects, path, fetch, frame)
