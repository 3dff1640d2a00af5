"""Loading one frame of a Part 10 object: shared by ``dicomfile:`` and ``wadouri:``.

The object is fetched and parsed once (off the loop) and kept in a bounded
:class:`~imageloader.objectcache.ObjectCache` for its other frames; each frame's
metadata modules are registered under its imageId; the frame is decoded in the
decode pool at the load's request type and priority.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..context import LoadContext
from ..errors import InvalidImageIdError
from ..image import Image
from ..objectcache import ObjectCache
from .image import decode_to_image
from .modules import metadata_modules
from .part10 import Part10Object, parse_part10

__all__ = [
    "MAX_FRAME_NUMBER",
    "decode_part10_frame",
    "parse_frame_number",
    "part10_objects",
    "read_part10",
]


#: NumberOfFrames is an IS: no object has more frames than this.
MAX_FRAME_NUMBER = 2**31 - 1


def parse_frame_number(value: str | None, image_id: str) -> int:
    """A 1-based frame number from an imageId (``None``: frame 1)."""
    if value is None:
        return 1
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses, and
    # int() refuses more than 4300 digits: bound the length before converting.
    digits = value.lstrip("0")
    if (
        not value.isascii()
        or not value.isdigit()
        or not digits
        or len(digits) > 10
        or int(digits) > MAX_FRAME_NUMBER
    ):
        raise InvalidImageIdError(
            f"frame must be a number from 1 to {MAX_FRAME_NUMBER}, not {value[:40]!r}",
            image_id=image_id,
        )
    return int(digits)


def part10_objects(
    ctx: LoadContext, scheme: str, key_of: Callable[[str], str | None]
) -> ObjectCache[Part10Object]:
    """The loader's cache of parsed Part 10 objects for one scheme."""
    limits = ctx.limits
    return ctx.loader.shared(
        f"part10:{scheme}",
        lambda: ObjectCache(
            max_entries=limits.dataset_cache_entries,
            max_bytes=limits.dataset_cache_bytes,
            size_of=lambda obj: obj.size_in_bytes,
            key_of=key_of,
            events=ctx.loader.events,
        ),
    )


async def read_part10(data: bytes | str, ctx: LoadContext, image_id: str) -> Part10Object:
    """Parse bytes or a file off the loop, and index its frames there too."""

    def parse() -> Part10Object:
        obj = parse_part10(data, image_id=image_id, limits=ctx.limits)
        obj.frame(1)  # builds the encapsulated frame index now, not on the loop later
        return obj

    return await asyncio.to_thread(parse)


async def decode_part10_frame(
    image_id: str,
    ctx: LoadContext,
    objects: ObjectCache[Part10Object],
    key: str,
    fetch: Callable[[], Awaitable[Part10Object]],
    frame: int,
) -> Image:
    """Decode ``frame`` of the object ``fetch()`` gives (cached under ``key``)."""
    obj = await objects.get(key, fetch)
    if frame > obj.number_of_frames:
        raise InvalidImageIdError(
            f"frame {frame} is outside 1..{obj.number_of_frames}", image_id=image_id
        )
    store = ctx.metadata.store
    if image_id not in store:
        store.add(image_id, metadata_modules(obj.dataset, frame=frame))
    params = obj.pixel_params(frame, limits=ctx.limits)
    return await decode_to_image(
        image_id, ctx, obj.frame(frame), params, store.modules(image_id), obj.transfer_syntax_uid
    )
