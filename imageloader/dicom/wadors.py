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
from typing import TYPE_CHECKING

from multidict import CIMultiDict, CIMultiDictProxy

from ..context import LoadContext
from ..errors import FetchError, InvalidImageIdError, MetadataError, ResponseFormatError
from ..http import RETRY_STATUSES, HttpResponse
from ..image import Image
from ..imageid import http_url
from ..inflight import Flight
from ..registry import split_scheme
from .frames import parse_frame_number
from .image import decode_to_image
from .instances import InstanceFetcher, WadoRsRef
from .modules import pixel_params_from_modules
from .multipart import (
    Part,
    is_multipart,
    parse_multipart_related,
    transfer_syntax_from_content_type,
)

if TYPE_CHECKING:
    from ..context import LoaderServices

__all__ = [
    "WadoRsLoader",
    "WadoRsOptions",
    "WadoRsRef",
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
    """How ``wadors:`` asks for frames (per ImageLoader: see :func:`wadors_options`)."""

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


def wadors_options(ctx_or_loader: LoadContext | LoaderServices) -> WadoRsOptions:
    """The loader's WADO-RS options (mutable; set them before loading).

    The options of its :class:`WadoRsLoader` (``loader.builtin_loader("wadors").options``).
    """
    services = ctx_or_loader.loader if isinstance(ctx_or_loader, LoadContext) else ctx_or_loader
    loader = services.builtin_loader("wadors")
    assert isinstance(loader, WadoRsLoader)
    return loader.options


def parse_wadors_id(image_id: str) -> WadoRsRef:
    """Split a wadors imageId; raises InvalidImageIdError when it is not one."""
    _, url = split_scheme(image_id)
    match = _WADORS.match(url)
    if match is None:
        raise InvalidImageIdError(
            "expected wadors:{base}/studies/{st}/series/{se}/instances/{in}/frames/{n} with n >= 1",
            image_id=image_id,
        )
    http_url(url, image_id)
    frame = parse_frame_number(match["frame"], image_id)
    return WadoRsRef(match["base"], match["study"], match["series"], match["instance"], frame)


_Frames = dict[int, tuple[memoryview, str]]  # frame number -> (bytes, transfer syntax UID)
_Waiter = tuple[asyncio.Future[_Frames], str]  # (future, imageId)


@dataclass(slots=True)
class _Instance:
    """Frames of one instance waiting to be requested, and requests in flight."""

    pending: dict[int, list[_Waiter]] = field(default_factory=dict)
    in_flight: int = 0
    scheduled: bool = False


class FrameBatcher:
    """Fetches frames, grouping those of one instance into one request.

    A request is a :class:`~imageloader.inflight.Flight` whose awaiters are the
    loads of its frames: a failure names each load's imageId, and the request stops
    when every one of them has left.
    """

    def __init__(self, options: WadoRsOptions) -> None:
        self._options = options
        self._instances: dict[str, _Instance] = {}
        self._accepted: dict[str, int] = {}  # instance -> index of the Accept that worked
        self._tasks: set[asyncio.Task[_Frames]] = set()

    def close(self) -> None:
        """Cancel the requests in flight."""
        for task in self._tasks:
            task.cancel()

    async def frame(self, ctx: LoadContext, ref: WadoRsRef) -> tuple[memoryview, str]:
        """The frame's bytes and transfer syntax UID."""
        options = self._options
        key = ref.instance_url
        state = self._instances.setdefault(key, _Instance())
        future: asyncio.Future[_Frames] = asyncio.get_running_loop().create_future()
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
            return (await future)[ref.frame]
        finally:
            waiters = state.pending.get(ref.frame)
            if waiters is not None and waiter in waiters:  # left before its request
                waiters.remove(waiter)
                if not waiters:
                    del state.pending[ref.frame]

    def _start_scheduled(self, ctx: LoadContext, key: str, state: _Instance) -> None:
        state.scheduled = False
        if state.in_flight < self._options.requests_per_instance:
            self._start(ctx, key, state)

    def _start(self, ctx: LoadContext, key: str, state: _Instance) -> None:
        batch = ctx.limits.max_frames_per_request if self._options.batch_frames else 1
        frames = sorted(state.pending)[:batch]
        if not frames:
            if state.in_flight == 0 and not state.scheduled and self._instances.get(key) is state:
                del self._instances[key]  # every waiter left before its request
            return
        waiters = [waiter for n in frames for waiter in state.pending.pop(n)]
        state.in_flight += 1
        flight = Flight(self._fetch(ctx, key, frames))
        self._tasks.add(flight.task)
        flight.task.add_done_callback(lambda task: self._fetched(ctx, key, state, task))
        for future, image_id in waiters:
            flight.attach(future, image_id)
        if not flight.awaiters:
            flight.task.cancel()  # every caller left before the request started

    def _fetched(
        self, ctx: LoadContext, key: str, state: _Instance, task: asyncio.Task[_Frames]
    ) -> None:
        # A done callback: also reached by a request cancelled before it started.
        self._tasks.discard(task)
        state.in_flight -= 1
        if state.pending:
            self._start(ctx, key, state)
        elif state.in_flight == 0 and self._instances.get(key) is state:
            del self._instances[key]

    async def _fetch(self, ctx: LoadContext, key: str, frames: list[int]) -> _Frames:
        url = f"{key}/frames/{','.join(map(str, frames))}"
        response = await self._get(ctx, key, url)
        parts = split_frames(response.body, response.content_type, len(frames), ctx.image_id, url)
        return {n: (part.data, part_syntax(part)) for n, part in zip(frames, parts, strict=True)}

    async def _get(self, ctx: LoadContext, key: str, url: str) -> HttpResponse:
        accepts = self._options.accept
        first = self._accepted.get(key, 0)
        for index in range(first, len(accepts)):
            last = index == len(accepts) - 1
            try:
                response = await ctx.http.get(
                    url,
                    image_id=ctx.image_id,
                    headers={
                        "Accept": accepts[index],
                        "Accept-Encoding": self._options.accept_encoding,
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


class WadoRsLoader:
    """The ``wadors:`` loader of one ImageLoader: its options, instances and frame requests."""

    def __init__(self, services: LoaderServices) -> None:
        #: How frames are asked for (mutable: see :func:`wadors_options`).
        self.options = WadoRsOptions()
        self.instances = InstanceFetcher(services)
        self.batcher = FrameBatcher(self.options)

    async def aclose(self) -> None:
        """Cancel the metadata and frame requests in flight."""
        self.instances.close()
        self.batcher.close()

    async def load(self, image_id: str, ctx: LoadContext) -> Image:
        """One frame: metadata from the registry (else the instance's), bytes batched."""
        ref = parse_wadors_id(image_id)
        modules = ctx.metadata.modules(image_id)
        if "imagePixelModule" not in modules:
            await self.instances.fetch_instance(ctx, ref)
            modules = ctx.metadata.modules(image_id)
            if "imagePixelModule" not in modules:
                raise MetadataError("no imagePixelModule for this frame", image_id=image_id)
        data, syntax = await self.batcher.frame(ctx, ref)
        params = pixel_params_from_modules(modules, syntax, image_id=image_id)
        return await decode_to_image(image_id, ctx, data, params, modules, syntax)

    async def load_metadata(self, image_id: str, ctx: LoadContext) -> None:
        """Fetch and register the instance's metadata unless the frame already has it."""
        ref = parse_wadors_id(image_id)
        if "imagePixelModule" not in ctx.metadata.modules(image_id):
            await self.instances.fetch_instance(ctx, ref)
