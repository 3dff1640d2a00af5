"""Images that sharpen as their bytes arrive: ``loader.iter_image_stages(image_id)``.

As Cornerstone3D's streaming retrieve (``IRetrieveConfiguration``: ``streaming``,
``rangeIndex``/``chunkSize``, ``decodeLevel``), for one ``wadors:`` frame::

    async for image in loader.iter_image_stages(image_id):
        show(image)          # 128² after the first few KiB of an HTJ2K frame, then 512²

- The frame is fetched once, with the stored transfer syntax (``transfer-syntax=*``),
  and read as it streams. While an **HTJ2K** frame arrives, each of ``levels``
  (coarsest first; default ``(2,)``, a quarter of each side) is decoded from the
  bytes so far (:func:`~imageloader.decode.worker.decode_partial`) and yielded once it
  is complete: when a decode from at least 4 KiB more gives the same pixels (OpenJPH
  decodes a level from a few KiB, coarse while its code-blocks still arrive: on the
  corpus CT, 512² lossless, from 4 KiB on, but equal to the complete codestream's
  level 2 only from 16 KiB, 9%). ``image.decode_level`` says which level it is.
  Then the complete frame, decoded in the decode pool as any load, is yielded
  last; it is the one cached (``IMAGE_LOADED``). Each earlier image is an
  ``IMAGE_LOAD_STAGE`` event (``image``, ``decode_level``, ``bytes_received``).
- **Byte ranges** (``range_bytes=n``, Cornerstone's ``chunkSize``): the first request
  asks for ``Range: bytes=0-(n-1)``. A server that answers 206 sends that much;
  the stages are decoded from it, and the rest is asked for with a second range. A
  server that ignores ``Range`` answers 200 with the whole frame, which is read as
  it streams as above.
- Everything else gives one image, the final: a cached image (at once); another
  scheme, or a frame that is not HTJ2K (JPEG 2000 too: no installed binding decodes
  a truncated JPEG 2000 codestream — glymur's OpenJPEG and imagecodecs' refuse
  one), through :meth:`~imageloader.ImageLoader.load_and_cache_image`; a server
  that refuses the stored syntax likewise (the loader's fallbacks apply there).

A stage load runs beside the loader's in-flight table: a concurrent plain load of
the same imageId fetches it too.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
import numpy.typing as npt

from . import events as ev
from .context import LoadContext
from .decode.image import create_image
from .decode.params import PixelParams
from .decode.syntaxes import SYNTAXES, Family
from .decode.worker import decode_partial
from .dicom.image import decode_to_image
from .dicom.modules import pixel_params_from_modules
from .dicom.multipart import is_multipart, transfer_syntax_from_content_type
from .dicom.wadors import parse_wadors_id, part_syntax, split_frames, wadors_options
from .errors import FetchError, ImageLoaderError, ResponseFormatError
from .image import Image
from .levels import check_level
from .registry import split_scheme
from .request_pool import RequestType

if TYPE_CHECKING:
    from .loader import ImageLoader

__all__ = ["iter_image_stages"]

#: Bytes that must arrive between two attempts at a stage (each costs a decode).
_STEP = 4096
_REFUSED = frozenset({400, 406, 415, 500, 501})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass
class _Stream:
    """The frame's bytes as they arrive, and where its part's data starts."""

    content_type: str = ""
    body: bytearray = field(default_factory=bytearray)
    data_start: int | None = None
    syntax: str | None = None
    status: int = 200
    total: int | None = None  # from a 206's Content-Range

    def locate(self) -> None:
        """Find the first part's headers (once they are in): its syntax and data start."""
        if self.data_start is not None:
            return
        if not is_multipart(self.content_type):
            self.data_start = 0
            self.syntax = transfer_syntax_from_content_type(self.content_type)
            return
        end = self.body.find(b"\r\n\r\n")
        if end < 0 or end > 16384:
            return
        headers = bytes(self.body[:end]).decode("latin-1")
        match = re.search(r"(?im)^content-type:\s*(.+)$", headers)
        part_type = match.group(1).strip() if match else ""
        self.syntax = transfer_syntax_from_content_type(part_type) or (
            transfer_syntax_from_content_type(self.content_type)
        )
        self.data_start = end + 4

    @property
    def data(self) -> memoryview:
        return memoryview(self.body)[self.data_start or 0 :]


async def iter_image_stages(
    loader: ImageLoader,
    image_id: str,
    *,
    request_type: RequestType | str = RequestType.INTERACTION,
    priority: float = 0,
    levels: Sequence[int] = (2,),
    range_bytes: int | None = None,
) -> AsyncIterator[Image]:
    """Yield successively better Images of one frame; the last is the full frame."""
    wanted = sorted({check_level(n) for n in levels if n}, reverse=True)
    if range_bytes is not None and range_bytes < 1:
        raise ValueError(f"range_bytes must be positive, not {range_bytes!r}")
    rtype = RequestType(request_type)
    cached = loader.cache.get_image(image_id)
    if cached is not None:
        yield cached
        return
    if split_scheme(image_id)[0] != "wadors" or not wanted:
        yield await loader.load_and_cache_image(image_id, request_type=rtype, priority=priority)
        return
    ref = parse_wadors_id(image_id)
    await loader.load_metadata([image_id], request_type=rtype)
    modules = loader.metadata.modules(image_id)
    url = f"{ref.instance_url}/frames/{ref.frame}"
    headers = {
        "Accept": wadors_options(loader).accept[0],
        "Accept-Encoding": "identity",
    }
    queue: asyncio.Queue[Image | BaseException | None] = asyncio.Queue()
    stream = _Stream()
    ctx = LoadContext(loader, image_id, loader.default_options, rtype, priority)
    fetch = asyncio.ensure_future(
        _fetch(loader, ctx, url, headers, modules, wanted, range_bytes, stream, queue)
    )
    try:
        while True:
            item = await queue.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
        await fetch
    except _Refused:
        yield await loader.load_and_cache_image(image_id, request_type=rtype, priority=priority)
    finally:
        if not fetch.done():
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)


class _Refused(Exception):
    """The server will not send the stored bytes: load the usual way."""


async def _fetch(
    loader: ImageLoader,
    ctx: LoadContext,
    url: str,
    headers: dict[str, str],
    modules: dict[str, Any],
    levels: list[int],
    range_bytes: int | None,
    stream: _Stream,
    queue: asyncio.Queue[Image | BaseException | None],
) -> None:
    image_id = ctx.image_id
    pending = list(levels)
    tried_at = 0
    params: PixelParams | None = None
    # The last decode of pending[0]: a stage is yielded once a decode from more bytes
    # gives the same pixels (its resolutions are complete), never while its
    # code-blocks are still arriving.
    previous: npt.NDArray[Any] | None = None

    async def stages() -> None:
        """Decode the next stage from the bytes so far, if enough have come.

        Attempts are spaced by a quarter of what had arrived (at least 4 KiB), so a
        level that never decodes costs a few copies of the body, not one per chunk.
        """
        nonlocal tried_at, params, previous
        stream.locate()
        if not pending or stream.data_start is None or stream.syntax is None:
            return
        if params is None:
            syntax = SYNTAXES.get(stream.syntax)
            if syntax is None or syntax.family is not Family.HTJ2K:
                pending.clear()  # nothing decodes this syntax before it is complete
                return
            params = pixel_params_from_modules(modules, stream.syntax)
        if len(stream.body) < tried_at + max(_STEP, tried_at // 4):
            return
        tried_at = len(stream.body)
        data = bytes(stream.data)
        while pending:
            level = pending[0]
            try:
                decoded = await asyncio.to_thread(
                    decode_partial,
                    data,
                    params,
                    level,
                    ctx.options,
                    image_id,
                    ctx.limits.max_frame_pixels,
                    ctx.limits.max_frame_bytes,
                )
            except ImageLoaderError:
                return  # not enough yet
            before, previous = previous, decoded.pixels
            if before is None or not np.array_equal(before, decoded.pixels):
                return  # still changing: more of this level's data is on its way
            pending.pop(0)
            previous = None
            image = create_image(
                image_id,
                decoded,
                modules,
                transfer_syntax_uid=stream.syntax,
                photometric_interpretation=params.photometric_interpretation,
            )
            loader.events.emit(
                ev.IMAGE_LOAD_STAGE,
                image_id,
                image=image,
                decode_level=level,
                bytes_received=len(stream.body),
            )
            await queue.put(image)

    base = 0  # where this request's bytes start in the body (a retry starts there again)

    async def consume(resp: aiohttp.ClientResponse) -> None:
        nonlocal tried_at
        del stream.body[base:]
        tried_at = min(tried_at, base)
        stream.status = resp.status
        stream.content_type = stream.content_type or resp.headers.get("Content-Type", "")
        if resp.status == 206:
            found = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if found and found.group(3) != "*":
                stream.total = int(found.group(3))
        ceiling = ctx.limits.max_response_bytes
        async for chunk in resp.content.iter_any():
            stream.body += chunk
            if len(stream.body) > ceiling:
                raise ResponseFormatError(
                    f"response exceeds the limit of {ceiling} bytes", image_id=image_id, url=url
                )
            await stages()

    try:
        first = dict(headers)
        if range_bytes is not None:
            first["Range"] = f"bytes=0-{range_bytes - 1}"
        try:
            await loader.http.request(url, consume, image_id=image_id, headers=first)
        except FetchError as exc:
            if exc.status in _REFUSED:
                raise _Refused from exc
            raise
        if stream.status == 206 and (stream.total is None or len(stream.body) < stream.total):
            base = len(stream.body)
            rest = dict(headers, Range=f"bytes={base}-")
            await loader.http.request(url, consume, image_id=image_id, headers=rest)
        image = await _final(loader, ctx, url, stream, modules)
        await queue.put(image)
        await queue.put(None)
    except BaseException as exc:
        await queue.put(exc)
        if not isinstance(exc, Exception):
            raise


async def _final(
    loader: ImageLoader, ctx: LoadContext, url: str, stream: _Stream, modules: dict[str, Any]
) -> Image:
    """The complete frame, decoded as any load, cached, announced."""
    image_id = ctx.image_id
    [part] = split_frames(bytes(stream.body), stream.content_type, 1, image_id, url)
    syntax = part_syntax(part)
    params = pixel_params_from_modules(modules, syntax)
    image = await decode_to_image(image_id, ctx, part.data, params, modules, syntax)
    loader._cache_put(image, 0)
    loader.events.emit(ev.IMAGE_LOADED, image_id, image=image)
    return image
