"""``wadouri:`` (and its alias ``dicomweb:``): a whole Part 10 object over HTTP.

``wadouri:http://host/wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…
&contentType=application%2Fdicom[&frame=N]``, or any URL of a Part 10 object
(e.g. Orthanc's ``/instances/{id}/file``). ``frame`` is 1-based and is not sent to
the server. The object is downloaded once, however many of its frames load at
once, kept in a bounded cache for the frames still to come, and released when its
cached frames leave the image cache.

A WADO-URI request (``requestType=WADO``) that names no ``contentType`` is sent
with ``contentType=application/dicom``: without it the server renders the image
(WADO-URI's default is ``image/jpeg``; Orthanc 1.10 sends a JPEG or a PNG). The
imageId is unchanged (it stays the cache key). One that names only other content
types (say ``image/jpeg``) is an :class:`~imageloader.errors.InvalidImageIdError`
saying so, before any request.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlunsplit

from ..context import LoadContext
from ..errors import InvalidImageIdError
from ..image import Image
from ..imageid import check_frame, http_url
from ..registry import split_scheme
from .frames import Part10Loader, parse_frame_number, read_part10
from .modules import metadata_modules
from .part10 import Part10Object

if TYPE_CHECKING:
    from ..context import LoaderServices

__all__ = ["WadoUriLoader", "parse_wadouri_id"]

SCHEMES = ("wadouri", "dicomweb")


#: The one content type of a Part 10 object (PS3.18 WADO-URI ``contentType``).
DICOM_CONTENT_TYPE = "application/dicom"


def parse_wadouri_id(image_id: str) -> tuple[str, int]:
    """The URL to fetch (without ``frame``) and the 1-based frame number.

    A WADO-URI request naming no ``contentType`` asks for ``application/dicom``; one
    naming only others is refused (:func:`_content_type`).
    """
    _, url = split_scheme(image_id)
    parts = http_url(url, image_id)
    query = parse_qsl(parts.query, keep_blank_values=True)
    frames = [value for key, value in query if key == "frame"]
    if len(frames) > 1:
        raise InvalidImageIdError("more than one frame parameter", image_id=image_id)
    frame = parse_frame_number(frames[0] if frames else None, image_id)
    query = _content_type([(k, v) for k, v in query if k != "frame"], image_id)
    rest = urlencode(query)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, "")), frame


def _content_type(query: list[tuple[str, str]], image_id: str) -> list[tuple[str, str]]:
    """``query``, asking for ``application/dicom`` if it is a WADO-URI request.

    Only a ``requestType=WADO`` query is a WADO-URI request (any other URL is fetched
    as it is). Naming no content type (or an empty one), it gets
    ``contentType=application/dicom``: WADO-URI's default is a rendered image. A
    ``contentType`` is a list of media types (PS3.18: comma-separated, with
    parameters such as ``q``); one that names no ``application/dicom`` cannot give a
    Part 10 object, which is all ``wadouri:`` reads.
    """
    if not any(k == "requestType" and v.strip().upper() == "WADO" for k, v in query):
        return query
    named = [v for k, v in query if k == "contentType" and v.strip()]
    if not named:
        rest = [(k, v) for k, v in query if k != "contentType"]
        return [*rest, ("contentType", DICOM_CONTENT_TYPE)]
    types = [t.split(";", 1)[0].strip().lower() for v in named for t in v.split(",")]
    if DICOM_CONTENT_TYPE not in types:
        asked = ", ".join(named)
        raise InvalidImageIdError(
            f"the URL asks for contentType={asked}, and wadouri: needs {DICOM_CONTENT_TYPE}"
            f" (a Part 10 object): leave contentType out or set it to {DICOM_CONTENT_TYPE}",
            image_id=image_id,
        )
    return query


def _key_of(image_id: str) -> str | None:
    scheme, _ = split_scheme(image_id)
    if scheme not in SCHEMES:
        return None
    try:
        return parse_wadouri_id(image_id)[0]
    except InvalidImageIdError:
        return None


def _fetcher(
    url: str, ctx: LoadContext, image_id: str
) -> Callable[[], Coroutine[Any, Any, Part10Object]]:
    async def fetch() -> Part10Object:
        # Not gzipped: pixel data barely compresses, and the server pays for trying.
        response = await ctx.http.get(
            url, image_id=image_id, headers={"Accept-Encoding": "identity"}
        )
        return await read_part10(response.body, ctx, image_id)

    return fetch


class WadoUriLoader(Part10Loader):
    """The ``wadouri:`` / ``dicomweb:`` loader of one ImageLoader (one object cache for both)."""

    def __init__(self, services: LoaderServices) -> None:
        super().__init__(services, _key_of)

    async def load(self, image_id: str, ctx: LoadContext) -> Image:
        """One frame of a Part 10 object over HTTP."""
        url, frame = parse_wadouri_id(image_id)
        return await self.decode_frame(image_id, ctx, url, _fetcher(url, ctx, image_id), frame)

    async def load_metadata(self, image_id: str, ctx: LoadContext) -> None:
        """Register the frame's metadata modules (the object is downloaded, and kept, whole)."""
        url, frame = parse_wadouri_id(image_id)
        obj = await self.objects.get(url, _fetcher(url, ctx, image_id))
        check_frame(frame, obj.number_of_frames, image_id)
        ctx.metadata.store.add(image_id, metadata_modules(obj.dataset, frame=frame))
