"""FastAPI: one ImageLoader per app, handed to routes, with PNG and metadata routes.

::

    from fastapi import FastAPI
    from imageloader import AccessPolicy
    from imageloader.integrations.fastapi import image_router, imageloader_lifespan

    app = FastAPI(lifespan=imageloader_lifespan(
        access=AccessPolicy(schemes={"wadors"}, hosts={"pacs.example.org"}),
    ))
    app.include_router(image_router())      # GET /images/{image_id}, /metadata/{module}/{image_id}
    add_error_handlers(app)                 # ImageLoaderError -> JSON, 400/403/404/502/504

    @app.get("/size/{image_id:path}")
    async def size(image_id: str, loader: LoaderDep) -> dict[str, int]:
        image = await loader.load_and_cache_image(image_id)
        return {"rows": image.rows, "columns": image.columns}

- The lifespan opens the loader on startup and closes it (workers, session) on
  shutdown; :func:`open_loader` does the same inside a lifespan of your own.
- :data:`LoaderDep` (``Depends(get_loader)``) hands the loader to a route.
- :func:`add_error_handlers` turns every :class:`~imageloader.errors.ImageLoaderError` into
  a JSON error with the status that fits (:func:`status_for`).
- :func:`load_image` loads for a request and cancels the load if the client goes
  away: FastAPI does not cancel a route when its client disconnects, and a load
  nobody waits for any more is cancelled by the loader (its fetch too).
- A service that takes imageIds from its users must pass an
  :class:`~imageloader.AccessPolicy`: an imageId outside it is refused with 403
  before anything is fetched or opened.

imageIds go in the path percent-encoded (``urllib.parse.quote(image_id, safe="")``),
so their own ``?`` and ``/`` survive.

``GET /images/{image_id}`` (:func:`image_router`) costs little more than the load:

- Rendering (resize, window, PNG: :func:`~imageloader.render.render_png`) runs on the
  :class:`RenderCache`'s threads, never on the event loop. A thread, not the decode
  pool: a 512² CT renders in 1.3–1.7 ms, mostly in numpy's table lookup and deflate,
  which release the GIL (two threads render 1.6–1.8× as many as one), while a trip
  to a worker process would pickle its 512 KiB of pixels through a pipe (~1 ms of
  the loop's time) and queue behind decodes.
- Rendered bytes are cached (:class:`RenderCache`, one per app, on ``app.state``) by
  imageId, window, size, format and encoder, least recently used out beyond
  ``render_cache_bytes`` (default :data:`DEFAULT_RENDER_CACHE_BYTES`, 64 MiB; each
  entry counts its bytes, its imageId and :data:`ENTRY_OVERHEAD_BYTES`).
  Concurrent requests for a rendering not yet cached share one render.
- Every answer has a strong ``ETag`` (a hash of the cache key and the bytes); a
  request whose ``If-None-Match`` names it is answered ``304`` with no body.
- ``Cache-Control``: an imageId whose content cannot change (:func:`content_is_immutable`:
  a WADO-RS frame, a WADO-URI object named by its ``objectUID``: DICOM never reuses a
  SOP Instance UID for other content) is served from the render cache without
  touching the loader and answered :data:`IMMUTABLE_CACHE_CONTROL`. Any other
  (``dicomfile:`` paths, which may change on disk; files in memory, ``dicomfile:N``,
  which may be removed; web images; NIfTI) is answered :data:`REVALIDATE_CACHE_CONTROL`
  (``no-cache``: the client revalidates with the ETag every time) and is loaded on
  every request (a hit in the loader's image cache), its rendering kept only while
  the very image it was made from stays in the loader's cache: when the loader drops
  it (evicted, its file removed), the rendering goes too.
- The lifespan starts the decode workers before the app serves and lets them
  finish starting in the background (``warm=True``): their start takes 0.7–0.9 s
  (two workers on two cores, numpy and the codecs imported), which would hold up
  startup; a request that comes sooner waits for workers already starting, and the
  first JPEG-LS image costs 19–32 ms warm instead of 205–256 ms cold.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import logging
import os
import re
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import numpy.typing as npt
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from .. import events as ev
from ..errors import (
    AccessDeniedError,
    DecodeError,
    FetchError,
    ImageLoaderError,
    ImageTooLargeError,
    InvalidImageIdError,
    LoadCancelledError,
    LoaderClosedError,
    LoadTimeoutError,
    MetadataError,
    NotFoundError,
    UnknownSchemeError,
)
from ..image import Image
from ..imageid import split_scheme
from ..levels import MAX_DECODE_LEVEL, image_id_of, level_key
from ..loader import ImageLoader
from ..metadata import MODULE_TYPES, module_to_json
from ..render import png_encoder, render_png
from ..request_pool import RequestType

__all__ = [
    "DEFAULT_RENDER_CACHE_BYTES",
    "IMMUTABLE_CACHE_CONTROL",
    "RENDERS_STATE_KEY",
    "REVALIDATE_CACHE_CONTROL",
    "STATE_KEY",
    "ClientDisconnectedError",
    "LoaderDep",
    "RenderCache",
    "RenderKey",
    "Rendering",
    "add_error_handlers",
    "content_is_immutable",
    "error_body",
    "etag_matches",
    "get_loader",
    "get_renders",
    "image_router",
    "imageloader_lifespan",
    "load_image",
    "open_loader",
    "render_png",
    "status_for",
]

logger = logging.getLogger("imageloader.fastapi")

#: Where the loader lives on ``app.state``.
STATE_KEY = "imageloader"
#: Where the app's :class:`RenderCache` lives on ``app.state``.
RENDERS_STATE_KEY = "imageloader_renders"
#: nginx's "client closed request": logged, never seen by the client that left.
CLIENT_CLOSED_REQUEST = 499
#: The render cache's default bound: ~1,300 512² CT slices or ~5,000 256-pixel thumbnails.
DEFAULT_RENDER_CACHE_BYTES = 64 << 20
#: What an entry costs besides its bytes and its imageId (its key, ETag, index and
#: dict slots: ~600 B measured with tracemalloc), so that many tiny renderings
#: (thumbnails of 8×8 images) are bounded too.
ENTRY_OVERHEAD_BYTES = 768
#: ``Cache-Control`` for content that cannot change. ``private``: these are patient
#: images, which a shared cache (a proxy, a CDN) must not keep unless the deployment
#: says so (``image_router(immutable_cache_control="public, ...")``).
IMMUTABLE_CACHE_CONTROL = "private, max-age=31536000, immutable"
#: ``Cache-Control`` for content that may change or go: keep it, but revalidate it
#: (``If-None-Match`` with its ETag) before every use.
REVALIDATE_CACHE_CONTROL = "private, no-cache"

_WADORS_FRAME = re.compile(
    r"^https?://.+?/studies/[^/?#]+/series/[^/?#]+/instances/[^/?#]+/frames/[0-9]+$"
)


class ClientDisconnectedError(Exception):
    """The client went away before its image was ready; the load was cancelled."""


@asynccontextmanager
async def open_loader(
    app: FastAPI,
    *,
    render_cache_bytes: int = DEFAULT_RENDER_CACHE_BYTES,
    warm: bool = True,
    **loader_options: Any,
) -> AsyncIterator[ImageLoader]:
    """Open an ImageLoader for ``app`` (on ``app.state``) for the duration of the block.

    With it, a :class:`RenderCache` of ``render_cache_bytes`` for the PNG route. With
    ``warm``, the decode workers are started before the block is entered and finish
    starting in the background (see the module's notes); a failure to start them is
    logged, and the first decode tries again.
    """
    async with ImageLoader(**loader_options) as loader:
        renders = RenderCache(loader, max_bytes=render_cache_bytes)
        setattr(app.state, STATE_KEY, loader)
        setattr(app.state, RENDERS_STATE_KEY, renders)
        warming: asyncio.Task[None] | None = None
        if warm:
            warming = asyncio.get_running_loop().create_task(_warm(loader), name="imageloader-warm")
            # Its first step starts the worker processes, now: they exist before
            # the app serves; only waiting for them to be ready is left to the task.
            await asyncio.sleep(0)
        try:
            yield loader
        finally:
            setattr(app.state, STATE_KEY, None)
            setattr(app.state, RENDERS_STATE_KEY, None)
            if warming is not None:
                warming.cancel()
                await asyncio.gather(warming, return_exceptions=True)
            await renders.aclose()


async def _warm(loader: ImageLoader) -> None:
    try:
        await loader.decode_pool.warm()
    except ImageLoaderError as exc:
        logger.warning("the decode workers did not start: %s", exc)


def imageloader_lifespan(
    *,
    render_cache_bytes: int = DEFAULT_RENDER_CACHE_BYTES,
    warm: bool = True,
    **loader_options: Any,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI ``lifespan``: one ``ImageLoader(**loader_options)`` for the app's life.

    ``render_cache_bytes`` bounds the PNG route's :class:`RenderCache`; ``warm``
    starts the decode workers at startup (:func:`open_loader`).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_loader(
            app, render_cache_bytes=render_cache_bytes, warm=warm, **loader_options
        ):
            yield

    return lifespan


def get_loader(request: Request) -> ImageLoader:
    """The app's loader (a FastAPI dependency)."""
    loader = getattr(request.app.state, STATE_KEY, None)
    if not isinstance(loader, ImageLoader):
        raise RuntimeError(
            "no ImageLoader on this app: create it with "
            "FastAPI(lifespan=imageloader_lifespan(...)) or open_loader() in your lifespan"
        )
    return loader


LoaderDep = Annotated[ImageLoader, Depends(get_loader)]

# Most specific first: the first class an error is an instance of decides.
_STATUS: tuple[tuple[type[ImageLoaderError], int], ...] = (
    (AccessDeniedError, 403),
    (InvalidImageIdError, 400),
    (UnknownSchemeError, 400),
    (NotFoundError, 404),
    (LoadTimeoutError, 504),
    (LoaderClosedError, 503),
    (LoadCancelledError, 503),
    # The upstream answered, or sent an object, that cannot be made into an image.
    (FetchError, 502),
    (ImageTooLargeError, 502),
    (MetadataError, 502),
)


def status_for(error: ImageLoaderError) -> int:
    """The HTTP status for an error: 400 bad imageId, 403 refused, 404, 502 upstream, 504."""
    if isinstance(error, FetchError) and error.status == 404:
        return 404
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 502 if isinstance(error, DecodeError) else 500


def error_body(error: ImageLoaderError) -> dict[str, Any]:
    """The JSON body of an error response."""
    body: dict[str, Any] = {
        "error": type(error).__name__,
        "message": error.message,
        "image_id": error.image_id,
    }
    if isinstance(error, FetchError):
        body["upstream_status"] = error.status
    return body


async def _loader_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ImageLoaderError)
    return JSONResponse(error_body(exc), status_code=status_for(exc))


async def _disconnected_error(request: Request, exc: Exception) -> Response:
    return Response(status_code=CLIENT_CLOSED_REQUEST)


def add_error_handlers(app: FastAPI) -> None:
    """Answer ImageLoaderErrors as JSON with :func:`status_for`'s status."""
    app.add_exception_handler(ImageLoaderError, _loader_error)
    app.add_exception_handler(ClientDisconnectedError, _disconnected_error)


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def load_image(request: Request, image_id: str, **options: Any) -> Image:
    """``load_and_cache_image`` for a request, cancelled if its client disconnects.

    Raises :class:`ClientDisconnectedError` then (answered 499, which nobody reads).
    """
    loader = get_loader(request)
    if options.keys() <= {"request_type", "priority", "decode_level"} and isinstance(image_id, str):
        # What load_and_cache_image returns first.
        cached = loader.cache.get_image(level_key(image_id, options.get("decode_level", 0)))
        if cached is not None:
            return cached
    load = asyncio.ensure_future(loader.load_and_cache_image(image_id, **options))
    watch = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({load, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        load.cancel()
        raise
    finally:
        watch.cancel()
    if load.done():
        return load.result()
    # This request stops awaiting; a load nobody else awaits is cancelled, fetch and all.
    load.cancel()
    await asyncio.gather(load, return_exceptions=True)
    raise ClientDisconnectedError(image_id)


def content_is_immutable(image_id: str) -> bool:
    """Whether ``image_id`` names content that can never change.

    True for a WADO-RS frame (``wadors:…/studies/…/series/…/instances/{uid}/frames/{n}``)
    and a WADO-URI object named by its ``objectUID`` (``wadouri:``, ``dicomweb:``): a
    SOP Instance UID is never reused for other content (DICOM PS3.5 §9). False for
    everything else: local files (which may change), files in memory (which may be
    removed), web images and NIfTI files, and WADO-URI URLs without an ``objectUID``.
    """
    try:
        scheme, rest = split_scheme(image_id)
        if scheme == "wadors":
            return _WADORS_FRAME.match(rest) is not None
        if scheme in ("wadouri", "dicomweb"):
            query = parse_qsl(urlsplit(rest).query)
            return any(name == "objectUID" and value.strip() for name, value in query)
    except (ImageLoaderError, ValueError):
        return False
    return False


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (RFC 9110 §13.1.2).

    Compared weakly, as If-None-Match is (``W/"x"`` matches ``"x"``); ``*`` matches.
    """
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


class RenderKey(NamedTuple):
    """Everything that makes a rendering's bytes: the cache key, hashed into the ETag."""

    image_id: str
    window_center: float | None
    window_width: float | None
    size: int | None
    media_type: str = "image/png"
    encoder: str = png_encoder()  # the compressor found here, its level, the filter


@dataclass(frozen=True, slots=True)
class Rendering:
    """A rendered image: its bytes, its strong ETag, and whether its content is immutable."""

    body: bytes
    etag: str
    media_type: str
    immutable: bool


@dataclass(slots=True)
class _Entry:
    rendering: Rendering
    size: int
    #: Content that may change: the pixels it was rendered from (None: immutable).
    pixels: weakref.ref[npt.NDArray[Any]] | None


def _threads() -> int:
    return max(1, min(4, len(os.sched_getaffinity(0))))


class RenderCache:
    """One app's rendered images: on threads, once per key at a time, LRU within bytes.

    ``await renders.render(key, image, immutable=...)`` returns the cached rendering
    or renders it with ``renderer`` (default :func:`~imageloader.render.render_png`) on
    one of ``threads`` threads (``imageloader-render-N``), concurrent callers sharing
    the one render. ``get(key)`` returns an immutable rendering without an image.

    A rendering of content that may change is kept only while its image is in the
    loader's cache, and is used only with that same image (its pixel array): the
    loader's ``IMAGE_CACHE_IMAGE_REMOVED`` drops it. Counters: ``renders`` (started),
    ``shared`` (callers that joined a render under way), ``hits``, ``evictions``;
    ``size_bytes`` (each entry's bytes, imageId and :data:`ENTRY_OVERHEAD_BYTES`) never
    exceeds ``max_bytes``.
    """

    def __init__(
        self,
        loader: ImageLoader,
        *,
        max_bytes: int = DEFAULT_RENDER_CACHE_BYTES,
        threads: int | None = None,
        renderer: Callable[..., bytes] = render_png,
    ) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.loader = loader
        self.max_bytes = max_bytes
        self.threads = threads if threads is not None else _threads()
        self.renderer = renderer
        self.size_bytes = 0
        self.renders = 0
        self.shared = 0
        self.hits = 0
        self.evictions = 0
        self._entries: OrderedDict[RenderKey, _Entry] = OrderedDict()
        self._mutable: dict[str, set[RenderKey]] = {}  # imageId -> its changeable entries
        self._flights: dict[tuple[RenderKey, int | None], asyncio.Future[Rendering]] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        self._unsubscribe = loader.events.on(ev.IMAGE_CACHE_IMAGE_REMOVED, self._image_removed)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def in_flight(self) -> int:
        """Renders running or waiting for a thread."""
        return len(self._flights)

    def get(self, key: RenderKey, image: Image | None = None) -> Rendering | None:
        """The cached rendering for ``key`` (most recently used now), or None.

        Content that may change is returned only for the image it was made from.
        """
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.pixels is not None and (image is None or entry.pixels() is not image.pixel_data):
            if image is not None:
                self._discard(key)  # made from another image: stale
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.rendering

    async def render(self, key: RenderKey, image: Image, *, immutable: bool) -> Rendering:
        """The rendering of ``image`` for ``key``: cached, being made, or made now."""
        cached = self.get(key, image)
        if cached is not None:
            return cached
        if self._closed:
            raise LoaderClosedError("the render cache is closed", image_id=key.image_id)
        # Any image of an immutable imageId has the same bytes; otherwise only this one.
        flight = (key, None if immutable else id(image))
        future = self._flights.get(flight)
        if future is not None:
            self.shared += 1
        else:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    self.threads, thread_name_prefix="imageloader-render"
                )
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._executor, self._render, key, image, immutable)
            self.renders += 1
            self._flights[flight] = future
            future.add_done_callback(functools.partial(self._rendered, flight, image))
        # One caller leaving (its task cancelled) does not cancel the others' render.
        return await asyncio.shield(future)

    def _render(self, key: RenderKey, image: Image, immutable: bool) -> Rendering:
        """On a render thread: the bytes, and their ETag."""
        body = self.renderer(
            image, window_center=key.window_center, window_width=key.window_width, size=key.size
        )
        digest = hashlib.blake2b(repr(tuple(key)).encode(), digest_size=16)
        digest.update(body)
        return Rendering(body, f'"{digest.hexdigest()}"', key.media_type, immutable)

    def _rendered(
        self,
        flight: tuple[RenderKey, int | None],
        image: Image,
        future: asyncio.Future[Rendering],
    ) -> None:
        if self._flights.get(flight) is future:
            del self._flights[flight]
        if self._closed or future.cancelled() or future.exception() is not None:
            return
        key, rendering = flight[0], future.result()
        if rendering.immutable:
            self._put(key, rendering, None)
        elif self.loader.cache.peek(level_key(key.image_id, image.decode_level)) is image:
            # Kept while its image is cached (whose removal drops it), else not at all.
            self._put(key, rendering, weakref.ref(image.pixel_data))

    def _put(
        self,
        key: RenderKey,
        rendering: Rendering,
        pixels: weakref.ref[npt.NDArray[Any]] | None,
    ) -> None:
        size = len(rendering.body) + len(key.image_id) + ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes:
            return
        self._discard(key)
        while self._entries and self.size_bytes + size > self.max_bytes:
            self._discard(next(iter(self._entries)))
            self.evictions += 1
        self._entries[key] = _Entry(rendering, size, pixels)
        self.size_bytes += size
        if pixels is not None:
            self._mutable.setdefault(key.image_id, set()).add(key)

    def _discard(self, key: RenderKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.size_bytes -= entry.size
        if entry.pixels is not None:
            keys = self._mutable.get(key.image_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._mutable[key.image_id]

    def _image_removed(self, event: ev.Event) -> None:
        if event.image_id is None:
            return
        # The event names the cache key; renders are by imageId, whatever the level.
        for key in tuple(self._mutable.get(image_id_of(event.image_id), ())):
            self._discard(key)

    def clear(self) -> None:
        """Forget every rendering (renders under way still finish for their callers)."""
        self._entries.clear()
        self._mutable.clear()
        self.size_bytes = 0

    async def aclose(self) -> None:
        """Forget everything and stop the render threads (after their renders)."""
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        self.clear()
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)


def get_renders(request: Request) -> RenderCache:
    """The app's :class:`RenderCache` (made on first use for a loader put there by hand)."""
    loader = get_loader(request)
    renders = getattr(request.app.state, RENDERS_STATE_KEY, None)
    if not isinstance(renders, RenderCache) or renders.loader is not loader:
        renders = RenderCache(loader)
        setattr(request.app.state, RENDERS_STATE_KEY, renders)
    return renders


async def covering_level(
    loader: ImageLoader,
    image_id: str,
    size: int | None,
    request_type: RequestType | str = RequestType.INTERACTION,
) -> int:
    """The decode level whose frame still covers ``size`` pixels along its longest
    edge (0 without a size, or when the frame's size cannot be known first).

    The frame's rows and columns come from its metadata: registered already, or
    read with :meth:`~imageloader.ImageLoader.load_metadata` (for ``wadors:`` the
    request a load makes first; for ``dicomfile:`` the file's header, parsed once
    for the load too).
    """
    if size is None:
        return 0
    pixel = loader.metadata.get("imagePixelModule", image_id)
    if pixel is None:
        await loader.load_metadata([image_id], request_type=request_type)
        pixel = loader.metadata.get("imagePixelModule", image_id)
    if pixel is None:
        return 0
    longest = max(int(pixel.rows), int(pixel.columns))
    level = 0
    while level < MAX_DECODE_LEVEL and -(-longest // (2 << level)) >= size:
        level += 1
    return level


def image_router(
    *,
    request_type: str = "interaction",
    thumbnail_size: int = 128,
    decode_levels: bool = True,
    immutable: Callable[[str], bool] = content_is_immutable,
    immutable_cache_control: str = IMMUTABLE_CACHE_CONTROL,
    revalidate_cache_control: str = REVALIDATE_CACHE_CONTROL,
) -> APIRouter:
    """``GET /images/{image_id}`` (PNG) and ``GET /metadata/{module}/{image_id}`` (JSON).

    PNGs are rendered off the loop and cached (the module's notes): ``immutable``
    says which imageIds' content cannot change (served from the render cache with
    ``immutable_cache_control``); the others are answered with
    ``revalidate_cache_control``. Errors become JSON responses once the app has
    :func:`add_error_handlers`.

    ``size`` (the longest edge, in pixels) loads the frame at the decode level that
    still covers it (:func:`covering_level`: a 512² JPEG 2000 frame asked for at
    128 is decoded at 128², not decoded in full and shrunk), then fits it. A router
    of ``request_type="thumbnail"`` serves thumbnails: a request without ``size``
    gets ``thumbnail_size``. ``decode_levels=False`` always decodes in full (then
    fits): what the route did before decode levels, kept for comparison.
    """
    if RequestType(request_type) is RequestType.THUMBNAIL:
        default_size: int | None = thumbnail_size
    else:
        default_size = None
    router = APIRouter()

    @router.get(
        "/images/{image_id:path}",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}},
            304: {"description": "Not modified: If-None-Match names the current ETag"},
        },
    )
    async def image_png(
        request: Request,
        image_id: str,
        window_center: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        window_width: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
        size: Annotated[int | None, Query(ge=1, le=4096)] = None,
    ) -> Response:
        renders = get_renders(request)
        size = default_size if size is None else size
        key = RenderKey(image_id, window_center, window_width, size)
        rendering = renders.get(key)  # immutable content only: no load at all
        if rendering is None:
            loader = get_loader(request)
            loader.access.check_scheme(image_id)
            wanted = size if decode_levels else None
            level = await covering_level(loader, image_id, wanted, request_type)
            image = await load_image(
                request, image_id, request_type=request_type, decode_level=level
            )
            rendering = await renders.render(key, image, immutable=immutable(image_id))
        headers = {
            "ETag": rendering.etag,
            "Cache-Control": (
                immutable_cache_control if rendering.immutable else revalidate_cache_control
            ),
        }
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and etag_matches(if_none_match, rendering.etag):
            return Response(status_code=304, headers=headers)
        return Response(rendering.body, media_type=rendering.media_type, headers=headers)

    @router.get("/metadata/{module}/{image_id:path}")
    async def metadata(request: Request, module: str, image_id: str) -> JSONResponse:
        if module not in MODULE_TYPES:
            known = ", ".join(MODULE_TYPES)
            message = f"unknown metadata module {module!r}; known: {known}"
            return JSONResponse({"error": "UnknownModule", "message": message}, 404)
        loader = get_loader(request)
        loader.access.check_scheme(image_id)
        value = loader.metadata.get(module, image_id)
        if value is None:
            # Some schemes learn an image's metadata only by loading it.
            await load_image(request, image_id, request_type=request_type)
            value = loader.metadata.get(module, image_id)
        if value is None:
            message = f"the image has no {module}"
            body = {"error": "NoSuchModule", "message": message, "image_id": image_id}
            return JSONResponse(body, 404)
        return JSONResponse(module_to_json(value))

    return router
