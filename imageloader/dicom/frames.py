"""Loading one frame of a Part 10 object: shared by ``dicomfile:`` and ``wadouri:``.

The object is fetched and parsed once (off the loop) and kept in a bounded
:class:`~imageloader.objectcache.ObjectCache` for its other frames; each frame's
metadata modules are registered under its imageId; the frame is decoded in the
decode pool at the load's request type and priority.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..decode.params import DecodeOptions
from ..decode.worker import decode_frame
from ..errors import InvalidImageIdError
from ..image import Image
from ..loader import LoadContext
from ..objectcache import ObjectCache
from .image import create_image
from .modules import metadata_modules
from .part10 import Part10Object, parse_part10

__all__ = ["decode_part10_frame", "parse_frame_number", "part10_objects", "read_part10"]


def parse_frame_number(value: str | None, image_id: str) -> int:
    """A 1-based frame number from an imageId (``None``: frame 1)."""
    if value is None:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise InvalidImageIdError(f"frame must be a number >= 1, not {value!r}", image_id=image_id)
    return int(value)


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
    options = DecodeOptions(prescale=ctx.options.prescale, use_rgba=ctx.options.use_rgba)
    decoded = await ctx.decode_pool.run(
        decode_frame,
        obj.frame(frame),
        params,
        options,
        image_id,
        ctx.limits.max_frame_pixels,
        request_type=ctx.request_type,
        priority=ctx.priority,
    )
    return create_image(
        image_id,
        decoded,
        store.modules(image_id),
        transfer_syntax_uid=obj.transfer_syntax_uid,
        photometric_interpretation=params.photometric_interpretation,
    )
