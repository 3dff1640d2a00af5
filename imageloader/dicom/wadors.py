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
  fetched once and registered. A frame the instance does not have (``frames/2`` of a
  single-frame instance, ``frames/9`` of 8) is then a
  :class:`~imageloader.errors.NotFoundError` ("frame 2 of 1 does not exist"), from
  :func:`~imageloader.imageid.check_frame` as for every scheme; so is it for
  :meth:`WadoRsLoader.load_metadata`.
- Servers that refuse frames: when every Accept is refused (400, 406, 415, 500, 501;
  Orthanc 1.10 answers 400 "Bad file format" for some objects it stores), the
  instance itself is fetched (``.../instances/{in}``, ``multipart/related;
  type="application/dicom"; transfer-syntax=*``, Part 10 as stored), once however many
  of its frames are asked for, parsed off the loop and held in the loader's bounded
  Part 10 cache (:class:`~imageloader.dicom.frames.Part10Loader`, as ``dicomfile:``
  does: same frame cutting, same pixels); its frames are cut from it and decoded in
  the decode pool. The refusal is remembered per instance (a few thousand, oldest
  out), so its later frames go straight to the instance. A 404 is a NotFoundError,
  never a fallback; a fallback that fails too raises its own typed error, naming the
  imageId and the refused frames request.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict, CIMultiDictProxy

from ..context import LoadContext
from ..errors import (
    FetchError,
    ImageLoaderError,
    InvalidImageIdError,
    MetadataError,
    NotFoundError,
    ResponseFormatError,
)
from ..http import RETRY_STATUSES, HttpResponse
from ..image import Image
from ..imageid import check_frame, http_url
from ..inflight import Flight
from ..registry import split_scheme
from .frames import Part10Loader, parse_frame_number, read_part10
from .image import decode_to_image
from .instances import InstanceFetcher, WadoRsRef, fetch_part10, frame_image_id
from .modules import pixel_params_from_modules
from .multipart import (
    Part,
    is_multipart,
    parse_multipart_related,
    transfer_syntax_from_content_type,
)

if TYPE_CHECKING:
    from ..context import LoaderServices
    from .part10 import Part10Object

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
# Answers that mean "not in this form": try the next Accept instead of retrying; after
# the last one, fetch the instance itself (a 404 is none of these: nothing to fetch).
_REFUSED = frozenset({400, 406, 415, 500, 501})
_TRANSIENT = frozenset({429, 502, 503, 504})
# Instances remembered per FrameBatcher: the Accept that worked, or the refusal.
_ACCEPTED_MEMORY = 4096
# A refusal is remembered as its message: at most this much of it.
_REFUSAL_CHARS = 300
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
# What a waiter gets when its instance's frames were refused before its request went out.
_NO_FRAMES: _Frames = {}
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
    when every one of them has left. An instance whose frames the server refuses in
    every form asked for is remembered (:meth:`refusal`): its frames are not asked
    for again, and :meth:`frame` answers None for them.
    """

    def __init__(self, options: WadoRsOptions) -> None:
        self._options = options
        self._instances: dict[str, _Instance] = {}
        self._accepted: dict[str, int] = {}  # instance -> index of the Accept that worked
        # instance -> how its frames request was refused (its error message)
        self._refused: OrderedDict[str, str] = OrderedDict()
        self._tasks: set[asyncio.Task[_Frames]] = set()

    def refusal(self, instance_url: str) -> str | None:
        """How the server refused the instance's frames, if it did (then fetch the instance)."""
        return self._refused.get(instance_url)

    def close(self) -> None:
        """Cancel the requests in flight."""
        for task in self._tasks:
            task.cancel()

    async def frame(self, ctx: LoadContext, ref: WadoRsRef) -> tuple[memoryview, str] | None:
        """The frame's bytes and transfer syntax UID; None if its frames are refused.

        None when the server refused this instance's frames in every form asked for
        (400, 406, 415, 500, 501 to the last Accept), now or before: the caller fetches
        the instance instead. Any other failure is raised.
        """
        options = self._options
        key = ref.instance_url
        if key in self._refused:
            return None
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
            # A refusal that came before this frame's request went out: no frames.
            return (await future).get(ref.frame)
        except FetchError as exc:
            if exc.status in _REFUSED and key in self._refused:
                return None
            raise
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
        if key in self._refused:
            # Refused meanwhile: the frames still waiting are not asked for.
            for waiters in state.pending.values():
                for future, _ in waiters:
                    if not future.done():
                        future.set_result(_NO_FRAMES)
            state.pending.clear()
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
                if exc.status not in _REFUSED:
                    raise
                if last:
                    self._refuse(key, exc)
                    raise
                continue
            if index:
                # Remember what this instance needs, for its other frames.
                self._accepted[key] = index
                while len(self._accepted) > _ACCEPTED_MEMORY:
                    del self._accepted[next(iter(self._accepted))]
            return response
        raise AssertionError("unreachable: the last Accept raises or returns")

    def _refuse(self, key: str, exc: FetchError) -> None:
        """Remember that the instance's frames are refused (bounded: oldest out)."""
        self._accepted.pop(key, None)
        self._refused[key] = exc.message[:_REFUSAL_CHARS]
        self._refused.move_to_end(key)
        while len(self._refused) > _ACCEPTED_MEMORY:
            self._refused.popitem(last=False)


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


def _instance_of(image_id: str) -> str | None:
    """The instance URL of a wadors imageId (the key of its Part 10 object), else None."""
    try:
        if split_scheme(image_id)[0] != "wadors":
            return None
        return parse_wadors_id(image_id).instance_url
    except InvalidImageIdError:
        return None


def _modules(ctx: LoadContext, image_id: str, ref: WadoRsRef) -> dict[str, Any]:
    """The frame's modules, also when ``image_id`` is written another way.

    Metadata is registered under each frame's canonical id (``wadors:…/frames/N``);
    ``wado-rs: …``, ``WADORS:…`` or ``frames/01`` name the same frame, and get its
    modules registered under the caller's id too, where the caller will look.
    """
    modules = ctx.metadata.modules(image_id)
    if "imagePixelModule" in modules:
        return modules
    canonical = frame_image_id(ref.instance_url, ref.frame)
    if canonical != image_id:
        found = ctx.metadata.modules(canonical)
        if "imagePixelModule" in found:
            ctx.metadata.store.add(image_id, found)
            return found
    return modules


def _after_refusal(exc: ImageLoaderError, refusal: str | None) -> ImageLoaderError:
    """``exc`` (same type, same fields), saying why the instance was fetched at all."""
    why = "because its frames were refused" + (f": {refusal}" if refusal else "")
    if isinstance(exc, NotFoundError):
        # The frames exist (the server refused to send them, it did not say there are
        # none): a server without an instance route is a failed fetch, not a 404.
        failed = FetchError(f"{exc.message}; the instance was fetched {why}", image_id=exc.image_id)
        failed.url, failed.status = exc.url, exc.status  # named in the message already
        return failed
    clone = copy.copy(exc)
    clone.message = f"{exc.message}; the instance was fetched {why}"
    clone.args = (
        clone.message if exc.image_id is None else f"{clone.message} [imageId: {exc.image_id}]",
    )
    return clone


class WadoRsLoader:
    """The ``wadors:`` loader of one ImageLoader: its options, instances and frame requests.

    ``refused`` holds, within the loader's Part 10 cache bounds, the instances fetched
    whole because the server refused their frames.
    """

    def __init__(self, services: LoaderServices) -> None:
        #: How frames are asked for (mutable: see :func:`wadors_options`).
        self.options = WadoRsOptions()
        self.instances = InstanceFetcher(services)
        self.batcher = FrameBatcher(self.options)
        self.refused = Part10Loader(services, _instance_of)

    async def aclose(self) -> None:
        """Cancel the metadata, frame and instance requests in flight; drop the instances."""
        self.instances.close()
        self.batcher.close()
        await self.refused.aclose()

    async def load(self, image_id: str, ctx: LoadContext) -> Image:
        """One frame: metadata from the registry (else the instance's), bytes batched.

        A frame of an instance whose frames the server refuses is cut from the
        instance itself (fetched once, held in :attr:`refused`).
        """
        ref = parse_wadors_id(image_id)
        if self.batcher.refusal(ref.instance_url) is not None:
            return await self._from_instance(image_id, ctx, ref)  # no frames request
        modules = _modules(ctx, image_id, ref)
        if "imagePixelModule" not in modules:
            await self._fetch_metadata(image_id, ctx, ref)
            modules = _modules(ctx, image_id, ref)
            if "imagePixelModule" not in modules:
                raise MetadataError("no imagePixelModule for this frame", image_id=image_id)
        got = await self.batcher.frame(ctx, ref)
        if got is None:
            return await self._from_instance(image_id, ctx, ref)
        data, syntax = got
        params = pixel_params_from_modules(modules, syntax, image_id=image_id)
        return await decode_to_image(image_id, ctx, data, params, modules, syntax)

    async def load_metadata(self, image_id: str, ctx: LoadContext) -> None:
        """Fetch and register the instance's metadata unless the frame already has it.

        Raises NotFoundError for a frame the instance does not have.
        """
        ref = parse_wadors_id(image_id)
        if "imagePixelModule" not in _modules(ctx, image_id, ref):
            await self._fetch_metadata(image_id, ctx, ref)
            _modules(ctx, image_id, ref)

    async def _fetch_metadata(self, image_id: str, ctx: LoadContext, ref: WadoRsRef) -> None:
        """Fetch the instance's metadata; NotFoundError if it has no frame ``ref.frame``."""
        known = self.instances.frame_count(ref.instance_url)
        if known is not None:
            check_frame(ref.frame, known, image_id)  # past the end: no request
        count = await self.instances.fetch_instance(ctx, ref)
        check_frame(ref.frame, count, image_id)

    async def _from_instance(self, image_id: str, ctx: LoadContext, ref: WadoRsRef) -> Image:
        """The frame cut from the instance itself (Part 10), as ``dicomfile:`` cuts it."""
        key = ref.instance_url

        async def fetch() -> Part10Object:
            try:
                data = await fetch_part10(ctx.http, key, ctx.image_id)
                return await read_part10(data, ctx, ctx.image_id)
            except ImageLoaderError as exc:
                raise _after_refusal(exc, self.batcher.refusal(key)) from exc

        return await self.refused.decode_frame(image_id, ctx, key, fetch, ref.frame)
