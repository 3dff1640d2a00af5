"""``wadors:{base}/studies/{st}/series/{se}/instances/{in}/frames/{n}``: WADO-RS frames.

- Frames are asked for with ``Accept: multipart/related; type="application/octet-stream";
  transfer-syntax=*`` (configurable): the server sends what it stores, and each
  part's Content-Type says in which transfer syntax (plain ``application/octet-stream``
  means explicit VR little endian, as Orthanc sends it).
- Frames of one instance are batched (beyond Cornerstone): while a request for an
  instance is in flight, further frames of it wait and go together in the next
  ``frames/1,2,3`` request (at most ``Limits.max_frames_per_request``), each
  resolving its own awaiter. A series of single-frame instances is unaffected.
- A missing closing boundary is a :class:`~imageloader.errors.TruncatedResponseError`;
  a single-part (non-multipart) body is accepted too.
- Metadata comes from the registry (``imageloader.dicomweb.add_series_metadata`` or the
  caller's providers); when it has none for the frame, the instance's metadata is
  fetched once and registered.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from multidict import CIMultiDict, CIMultiDictProxy

from ..context import LoadContext
from ..errors import (
    FetchError,
    ImageLoaderError,
    InvalidImageIdError,
    MetadataError,
    ResponseFormatError,
)
from ..http import RETRY_STATUSES, HttpResponse
from ..image import Image
from ..registry import split_scheme
from .frames import parse_frame_number
from .image import decode_to_image
from .instances import InstanceRegistry, WadoRsRef, instance_registry
from .multipart import (
    Part,
    is_multipart,
    parse_multipart_related,
    transfer_syntax_from_content_type,
)

__all__ = [
    "WadoRsOptions",
    "WadoRsRef",
    "load_wadors",
    "load_wadors_metadata",
    "parse_wadors_id",
    "wadors_options",
]

EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFAULT_ACCEPT = (
    'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}',
)
# Answers that mean "not in this form": try the next Accept instead of retrying.
_REFUSED = frozenset({400, 406, 415, 500, 501})
_TRANSIENT = frozenset({429, 502, 503, 504})
_ACCEPTED_MEMORY = 4096
# Single-part bodies name their codec by media type instead of a transfer syntax.
_MEDIA_TYPE_SYNTAX = {
    "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jphc": "1.2.840.10008.1.2.4.201",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
}
_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
_WADORS = re.compile(
    r"^(?P<base>https?://.+?)/studies/(?P<study>[^/?#]+)/series/(?P<series>[^/?#]+)"
    r"/instances/(?P<instance>[^/?#]+)/frames/(?P<frame>[0-9]+)$"
)


@dataclass(slots=True)
class WadoRsOptions:
    """How ``wadors:`` asks for frames (per loader: see :func:`wadors_options`)."""

    #: Accept headers to try in order: the stored bytes first, then a transcode to
    #: explicit VR little endian for what a server cannot send as stored (Orthanc
    #: answers 500 for big endian, deflated and JPEG .53/.55 objects).
    accept: tuple[str, ...] = DEFAULT_ACCEPT
    #: Batch frames of one multi-frame instance into one request.
    batch_frames: bool = True
    #: Concurrent frame requests per instance while batching.
    requests_per_instance: int = 2
    #: Pixel data barely compresses (compressed syntaxes shrink ~2%), and a server
    #: that gzips it pays dearly: Orthanc spends ~50 ms of CPU per 512 KiB frame, and
    #: inflating costs ~1.5 ms of event loop. Say "gzip" for uncompressed data on a
    #: slow link.
    accept_encoding: str = "identity"


def wadors_options(ctx_or_loader: LoadContext | object) -> WadoRsOptions:
    """The loader's WADO-RS options (mutable; set them before loading)."""
    loader = getattr(ctx_or_loader, "loader", ctx_or_loader)
    return loader.shared("wadors:options", WadoRsOptions)  # type: ignore[attr-defined, no-any-return]


def parse_wadors_id(image_id: str) -> WadoRsRef:
    """Split a wadors imageId; raises InvalidImageIdError when it is not one."""
    _, url = split_scheme(image_id)
    match = _WADORS.match(url)
    if match is None or not _is_text(url):
        raise InvalidImageIdError(
            "expected wadors:{base}/studies/{st}/series/{se}/instances/{in}/frames/{n} with n >= 1",
            image_id=image_id,
        )
    frame = parse_frame_number(match["frame"], image_id)
    return WadoRsRef(match["base"], match["study"], match["series"], match["instance"], frame)


def _is_text(url: str) -> bool:
    """Whether ``url`` can be sent at all (a lone surrogate, as JSON's "\\ud800", cannot)."""
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_Waiter = tuple[asyncio.Future[tuple[memoryview, str]], str]  # (future, imageId)


@dataclass(slots=True)
class _Instance:
    """Frames of one instance waiting to be requested, and requests in flight."""

    pending: dict[int, list[_Waiter]] = field(default_factory=dict)
    in_flight: int = 0
    scheduled: bool = False


class FrameBatcher:
    """Fetches frames, grouping those of one instance into one request."""

    def __init__(self, ctx: LoadContext) -> None:
        self._loader = ctx.loader
        self._instances: dict[str, _Instance] = {}
        self._accepted: dict[str, int] = {}  # instance -> index of the Accept that worked
        self._tasks: set[asyncio.Task[None]] = set()
        ctx.loader.add_closer(self._close)

    def _close(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def frame(self, ctx: LoadContext, ref: WadoRsRef) -> tuple[memoryview, str]:
        """The frame's bytes and transfer syntax UID."""
        options = wadors_options(ctx)
        key = ref.instance_url
        state = self._instances.setdefault(key, _Instance())
        future: asyncio.Future[tuple[memoryview, str]] = asyncio.get_running_loop().create_future()
        waiter = (future, ctx.image_id)
        state.pending.setdefault(ref.frame, []).append(waiter)
        if not options.batch_frames:
            self._start(ctx, key, state)
        elif state.in_flight < options.requests_per_instance and not state.scheduled:
            # Start at the end of this turn of the loop, so that the frames asked for
            # in the same turn (a burst of loads) go out in one request.
            state.scheduled = True
            asyncio.get_running_loop().call_soon(self._start_scheduled, ctx, key, state)
        try:
            return await future
        finally:
            if not future.done():  # this caller left before its frame was requested
                waiters = state.pending.get(ref.frame)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del state.pending[ref.frame]

    def _start_scheduled(self, ctx: LoadContext, key: str, state: _Instance) -> None:
        state.scheduled = False
        if state.in_flight < wadors_options(ctx).requests_per_instance:
            self._start(ctx, key, state)

    def _start(self, ctx: LoadContext, key: str, state: _Instance) -> None:
        options = wadors_options(ctx)
        batch = ctx.limits.max_frames_per_request if options.batch_frames else 1
        frames = sorted(state.pending)[:batch]
        if not frames:
            if state.in_flight == 0 and not state.scheduled and self._instances.get(key) is state:
                del self._instances[key]  # every waiter left before its request
            return
        waiters = {n: state.pending.pop(n) for n in frames}
        state.in_flight += 1
        task = asyncio.ensure_future(self._fetch(ctx, key, state, frames, waiters))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        futures = [future for pairs in waiters.values() for future, _ in pairs]

        def abandon(_: object) -> None:
            # Every caller of this request left: stop it (the connection is closed).
            if all(f.cancelled() for f in futures) and not task.done():
                task.cancel()

        for future in futures:
            future.add_done_callback(abandon)

    async def _fetch(
        self,
        ctx: LoadContext,
        key: str,
        state: _Instance,
        frames: list[int],
        waiters: dict[int, list[_Waiter]],
    ) -> None:
        # The request serves several loads: errors are restated for each imageId.
        image_id = ctx.image_id
        try:
            url = f"{key}/frames/{','.join(map(str, frames))}"
            response = await self._get(ctx, key, url)
            parts = split_frames(response.body, response.content_type, len(frames), image_id, url)
            for n, part in zip(frames, parts, strict=True):
                result = (part.data, part_syntax(part))
                for future, _ in waiters[n]:
                    if not future.done():
                        future.set_result(result)
        except BaseException as exc:
            for pairs in waiters.values():
                for future, waiter_id in pairs:
                    if future.done():
                        continue
                    if isinstance(exc, ImageLoaderError):
                        future.set_exception(exc.for_image(waiter_id))
                    elif isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:
                        future.cancel()
            if not isinstance(exc, Exception):
                raise
        finally:
            state.in_flight -= 1
            if state.pending:
                self._start(ctx, key, state)
            elif state.in_flight == 0 and self._instances.get(key) is state:
                del self._instances[key]

    async def _get(self, ctx: LoadContext, key: str, url: str) -> HttpResponse:
        accepts = wadors_options(ctx).accept
        first = self._accepted.get(key, 0)
        for index in range(first, len(accepts)):
            last = index == len(accepts) - 1
            try:
                response = await ctx.http.get(
                    url,
                    image_id=ctx.image_id,
                    headers={
                        "Accept": accepts[index],
                        "Accept-Encoding": wadors_options(ctx).accept_encoding,
                    },
                    retry_statuses=RETRY_STATUSES if last else _TRANSIENT,
                )
            except FetchError as exc:
                if last or exc.status not in _REFUSED:
                    raise
                continue
            if index:
                # Remember what this instance needs, for its other frames.
                self._accepted[key] = index
                while len(self._accepted) > _ACCEPTED_MEMORY:
                    del self._accepted[next(iter(self._accepted))]
            return response
        raise AssertionError("unreachable: the last Accept raises or returns")


def part_syntax(part: Part) -> str:
    """The transfer syntax a part says its bytes are in (explicit VR LE by default)."""
    if part.transfer_syntax_uid:
        return part.transfer_syntax_uid
    media = (part.content_type or "").split(";", 1)[0].strip().lower()
    return _MEDIA_TYPE_SYNTAX.get(media, EXPLICIT_LE)


def split_frames(
    body: bytes, content_type: str, expected: int, image_id: str | None, url: str
) -> list[Part]:
    """The frames of a WADO-RS response, one part each, checked against the count asked."""
    if is_multipart(content_type):
        parts = parse_multipart_related(
            body, content_type, image_id=image_id, url=url, max_parts=expected
        )
    else:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/octet-stream" and not media.startswith("image/"):
            # A login page or an error document, not a frame.
            raise ResponseFormatError(
                f"expected frames, got Content-Type {content_type!r}", image_id=image_id, url=url
            )
        syntax = transfer_syntax_from_content_type(content_type)
        parts = [Part(_NO_HEADERS, content_type or None, syntax, memoryview(body), 0)]
    if len(parts) != expected:
        raise ResponseFormatError(
            f"asked for {expected} frame(s), the response has {len(parts)} part(s)",
            image_id=image_id,
            url=url,
        )
    return parts


def _batcher(ctx: LoadContext) -> FrameBatcher:
    return ctx.loader.shared("wadors:batcher", lambda: FrameBatcher(ctx))


async def load_wadors(image_id: str, ctx: LoadContext) -> Image:
    """The ``wadors:`` loader."""
    ref = parse_wadors_id(image_id)
    instances: InstanceRegistry = instance_registry(ctx.loader)
    modules = ctx.metadata.modules(image_id)
    if "imagePixelModule" not in modules:
        await instances.fetch_instance(ctx, ref)
        modules = ctx.metadata.modules(image_id)
        if "imagePixelModule" not in modules:
            raise MetadataError("no imagePixelModule for this frame", image_id=image_id)
    data, syntax = await _batcher(ctx).frame(ctx, ref)
    params = instances.pixel_params(ref, modules, syntax, ctx)
    return await decode_to_image(image_id, ctx, data, params, modules, syntax)


async def load_wadors_metadata(image_id: str, ctx: LoadContext) -> None:
    """Fetch and register the instance's metadata unless the frame already has it."""
    ref = parse_wadors_id(image_id)
    if "imagePixelModule" not in ctx.metadata.modules(image_id):
        await instance_registry(ctx.loader).fetch_instance(ctx, ref)
