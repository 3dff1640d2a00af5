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
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

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
from ..loader import ImageLoader
from ..metadata import MODULE_TYPES, module_to_json

__all__ = [
    "STATE_KEY",
    "ClientDisconnectedError",
    "LoaderDep",
    "add_error_handlers",
    "error_body",
    "get_loader",
    "image_router",
    "imageloader_lifespan",
    "load_image",
    "open_loader",
    "render_png",
    "status_for",
]

#: Where the loader lives on ``app.state``.
STATE_KEY = "imageloader"
#: nginx's "client closed request": logged, never seen by the client that left.
CLIENT_CLOSED_REQUEST = 499


class ClientDisconnectedError(Exception):
    """The client went away before its image was ready; the load was cancelled."""


@asynccontextmanager
async def open_loader(app: FastAPI, **loader_options: Any) -> AsyncIterator[ImageLoader]:
    """Open an ImageLoader for ``app`` (on ``app.state``) for the duration of the block."""
    async with ImageLoader(**loader_options) as loader:
        setattr(app.state, STATE_KEY, loader)
        try:
            yield loader
        finally:
            setattr(app.state, STATE_KEY, None)


def imageloader_lifespan(
    **loader_options: Any,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI ``lifespan``: one ``ImageLoader(**loader_options)`` for the app's life."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_loader(app, **loader_options):
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


def render_png(
    image: Image,
    *,
    window_center: float | None = None,
    window_width: float | None = None,
    size: int | None = None,
) -> bytes:
    """The image windowed to 8 bits, fitted into ``size`` pixels (longest edge), as PNG.

    CPU work: call it off the event loop (``asyncio.to_thread``) for large images.
    """
    from ..render import encode_png, resize_nearest, to_display

    pixels = to_display(image, window_center=window_center, window_width=window_width)
    if size is not None and max(pixels.shape[:2]) != size:
        scale = size / max(pixels.shape[:2])
        height = max(1, round(pixels.shape[0] * scale))
        width = max(1, round(pixels.shape[1] * scale))
        pixels = resize_nearest(pixels, height, width)
    return encode_png(pixels)


def image_router(*, request_type: str = "interaction") -> APIRouter:
    """``GET /images/{image_id}`` (PNG) and ``GET /metadata/{module}/{image_id}`` (JSON).

    Errors become JSON responses once the app has :func:`add_error_handlers`.
    """
    router = APIRouter()

    @router.get(
        "/images/{image_id:path}",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    async def image_png(
        request: Request,
        image_id: str,
        window_center: Annotated[float | None, Query()] = None,
        window_width: Annotated[float | None, Query(gt=0)] = None,
        size: Annotated[int | None, Query(ge=1, le=4096)] = None,
    ) -> Response:
        image = await load_image(request, image_id, request_type=request_type)
        png = await asyncio.to_thread(
            render_png, image, window_center=window_center, window_width=window_width, size=size
        )
        return Response(png, media_type="image/png")

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
