"""One frame of a Part 10 object: :class:`Part10Loader`, base of ``dicomfile:``, ``wadouri:``.

The object is fetched and parsed once (off the loop) and kept in the loader's
bounded :class:`~imageloader.objectcache.ObjectCache` for its other frames; each
frame's metadata modules are registered under its imageId, and its pixel parameters
come from them; the frame is decoded in the decode pool at the load's request type
and priority. ``wadors:`` holds one too, for the instances whose frames a server
refuses to send (it fetches those instances whole).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..context import LoadContext
from ..errors import InvalidImageIdError
from ..image import Image
from ..imageid import check_frame
from ..metadata import ImagePixelModule
from ..objectcache import ObjectCache
from .image import decode_to_image
from .modules import metadata_modules, pixel_params_from_modules
from .part10 import Part10Object, parse_part10

if TYPE_CHECKING:
    from ..context import LoaderServices

__all__ = [
    "MAX_FRAME_NUMBER",
    "Part10Loader",
    "parse_frame_number",
    "read_part10",
    "run_in_own_thread",
]

T = TypeVar("T")


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


async def run_in_own_thread(fn: Callable[[], T], name: str) -> T:
    """``fn()`` in a thread of its own (not the loop's default executor), awaited.

    A parse can take up to ``max_parse_seconds`` of CPU: on the default executor
    (``min(32, CPUs + 4)`` threads) a few hostile objects would hold every thread and
    starve unrelated loads' file and header reads. A thread is cheap next to a parse.
    Cancelling the await does not stop the thread: ``fn`` must watch for that itself.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # the await was cancelled
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(cast(T, result))

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = context.run(fn)
        except BaseException as exc:  # handed to the awaiting task, whatever it is
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await future


async def read_part10(
    data: bytes | memoryview | str, ctx: LoadContext, image_id: str
) -> Part10Object:
    """Parse bytes or a file off the loop, and index its frames there too.

    The parse runs in a thread of its own (:func:`run_in_own_thread`), is bounded in
    time (``max_parse_seconds``) and reads, and stops at its next read once this
    coroutine is cancelled (or ends otherwise), so that a cancelled load's thread does
    not go on parsing.
    """
    cancel = threading.Event()

    def parse() -> Part10Object:
        obj = parse_part10(data, image_id=image_id, limits=ctx.limits, cancel=cancel)
        obj.frame(1)  # builds the encapsulated frame index now, not on the loop later
        return obj

    try:
        return await run_in_own_thread(parse, "imageloader-part10")
    finally:
        cancel.set()


class Part10Loader:
    """Frames of Part 10 objects, each object fetched and parsed once for all its frames.

    ``objects`` holds the parsed objects (bounded by the ImageLoader's limits); an
    object goes when the last of its frames that was cached leaves the image cache
    (``key_of`` maps a frame's imageId to its object's key).
    """

    def __init__(self, services: LoaderServices, key_of: Callable[[str], str | None]) -> None:
        limits = services.limits
        self.objects: ObjectCache[Part10Object] = ObjectCache(
            max_entries=limits.dataset_cache_entries,
            max_bytes=limits.dataset_cache_bytes,
            size_of=lambda obj: obj.size_in_bytes,
            key_of=key_of,
            events=services.events,
        )

    async def aclose(self) -> None:
        """Drop the objects held and cancel their loads."""
        self.objects.clear()

    async def decode_frame(
        self,
        image_id: str,
        ctx: LoadContext,
        key: str,
        fetch: Callable[[], Coroutine[Any, Any, Part10Object]],
        frame: int,
    ) -> Image:
        """Decode ``frame`` of the object ``fetch()`` gives (cached under ``key``)."""
        obj = await self.objects.get(key, fetch)
        check_frame(frame, obj.number_of_frames, image_id)
        store = ctx.metadata.store
        if image_id not in store:
            store.add(image_id, metadata_modules(obj.dataset, frame=frame))
        modules = store.modules(image_id)
        syntax = obj.transfer_syntax_uid
        pixel = modules.get("imagePixelModule")
        if obj.pixel_keyword == "PixelData" and isinstance(pixel, ImagePixelModule):
            params = pixel_params_from_modules(modules, syntax, image_id=image_id)
        else:  # the dataset says what is wrong: float pixel data, a missing attribute
            params = obj.pixel_params(frame, limits=ctx.limits)
        data = obj.frame(frame)
        return await decode_to_image(image_id, ctx, data, params, modules, syntax)
