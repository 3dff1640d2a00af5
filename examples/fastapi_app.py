"""A FastAPI service: images as PNG and metadata as JSON, by imageId; DICOM uploads.

Run it::

    python examples/fastapi_app.py --port 8000

then, with the imageId percent-encoded into the path::

    CT=$(python -c 'import pydicom.data as d; print(d.get_testdata_file("CT_small.dcm"))')
    ID=$(python -c "import sys, urllib.parse as u; print(u.quote(sys.argv[1], safe=''))" \\
        "dicomfile:$CT")
    curl -o ct.png "http://127.0.0.1:8000/images/$ID?window_center=40&window_width=400&size=256"
    curl "http://127.0.0.1:8000/metadata/imagePixelModule/$ID"

or upload a DICOM Part 10 file and view its frames (Cornerstone's fileManager)::

    curl -F file=@ct.dcm http://127.0.0.1:8000/files      # or, the file as the body:
    curl -H 'Content-Type: application/dicom' --data-binary @ct.dcm http://127.0.0.1:8000/files
    # 201 {"image_id": "dicomfile:0", "frames": ["dicomfile:0?frame=1"], "number_of_frames": 1}
    curl -o frame.png "http://127.0.0.1:8000/images/dicomfile%3A0%3Fframe%3D1"
    curl -X DELETE http://127.0.0.1:8000/files/dicomfile%3A0                    # 204

Uploads are held in memory (``loader.files``) until deleted, bounded by
``--max-files-bytes``: an upload that would not fit is refused with 413 before it is
read (from its Content-Length), or as soon as a body sent without one passes the bound.
A multipart upload must say its Content-Length (411 otherwise): the form is parsed,
spooling the file to disk, before anything else sees it. A body that is not a DICOM
image is refused with 422 and not kept.

It takes imageIds from its users, so it only loads what its access policy allows
(anything else is answered 403 and never fetched). Configure it with environment
variables (comma-separated lists):

- ``IMAGELOADER_SCHEMES``: allowed schemes (default ``dicomfile,wadouri,wadors``);
- ``IMAGELOADER_HOSTS``: allowed HTTP hosts, ``host`` or ``host:port``
  (default ``127.0.0.1,localhost``: point it at your PACS);
- ``IMAGELOADER_ROOTS``: folders ``dicomfile:`` paths must be inside (default: the
  sample files that ship with pydicom, so it works with no server at all). Uploaded
  files (``dicomfile:N``) need only the ``dicomfile`` scheme, not a root.

Uploaded files are not private: anyone who can reach the service can view and delete
any of them by number. Put the service behind your own authentication.

Errors are JSON: 400 malformed imageId, 403 not allowed, 404 not found, 411/413/415/422
an upload without a length, too large, not DICOM or not an image, 502 the upstream failed
or sent something unusable, 504 it timed out.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pydicom
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from imageloader import AccessPolicy, ImageLoader, Limits
from imageloader.errors import (
    DecodeError,
    ImageLoaderError,
    ImageTooLargeError,
    MetadataError,
    NotFoundError,
)
from imageloader.integrations.fastapi import (
    CLIENT_CLOSED_REQUEST,
    LoaderDep,
    add_error_handlers,
    error_body,
    get_renders,
    image_router,
    imageloader_lifespan,
)

SAMPLES = Path(pydicom.__file__).parent / "data" / "test_files"
#: What a multipart upload may add around its file (boundaries, part headers).
FORM_OVERHEAD = 64 << 10

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/dicom": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def policy_from_environment() -> AccessPolicy:
    """The access policy the environment variables describe."""
    return AccessPolicy(
        schemes=_list("IMAGELOADER_SCHEMES", "dicomfile,wadouri,wadors"),
        hosts=_list("IMAGELOADER_HOSTS", "127.0.0.1,localhost"),
        roots=_list("IMAGELOADER_ROOTS", str(SAMPLES)),
    )


def _refused(status: int, error: ImageLoaderError | str, message: str = "") -> JSONResponse:
    """An error answer shaped as the error handlers shape theirs."""
    if isinstance(error, ImageLoaderError):
        body = error_body(error)
    else:
        body = {"error": error, "message": message, "image_id": None}
    # A refused body may be left unread: the connection cannot carry another request.
    headers = {"Connection": "close"} if status in (411, 413, 415) else None
    return JSONResponse(body, status_code=status, headers=headers)


def _too_large(loader: ImageLoader, length: int | None) -> JSONResponse:
    """413: an upload of ``length`` bytes (None: a body still coming) does not fit."""
    files = loader.files
    room = files.max_bytes - files.size_bytes
    upload = "an upload" if length is None else f"an upload of {length} bytes"
    message = (
        f"{upload} is more than the {room} bytes free of the {files.max_bytes} "
        "kept for uploaded files (delete files first)"
    )
    return _refused(413, ImageTooLargeError(message))


async def _read_body(request: Request, loader: ImageLoader) -> bytes | JSONResponse:
    """The raw body, refused (413) as soon as it passes the room left for files."""
    room = loader.files.max_bytes - loader.files.size_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > room:
            return _too_large(loader, None)
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_form_file(request: Request) -> bytes | JSONResponse:
    """The bytes of the form's ``file`` field."""
    async with request.form(max_files=1, max_fields=16) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return _refused(422, "MissingFile", "send the DICOM file as the form field 'file'")
        return await upload.read()


def create_app(
    access: AccessPolicy | None = None,
    *,
    max_web_workers: int = 2,
    max_files_bytes: int | None = None,
) -> FastAPI:
    """The app: one ImageLoader for its life, the image and upload routes, JSON errors.

    ``max_files_bytes``: the most bytes of uploaded files held at once
    (``Limits.max_files_bytes``; None: its default).
    """
    limits = Limits() if max_files_bytes is None else Limits(max_files_bytes=max_files_bytes)
    app = FastAPI(
        title="imageloader example",
        lifespan=imageloader_lifespan(
            access=access or policy_from_environment(),
            max_web_workers=max_web_workers,
            max_cache_size_bytes=512 << 20,
            limits=limits,
        ),
    )
    app.include_router(image_router())
    add_error_handlers(app)

    @app.get("/stats")
    async def stats(request: Request, loader: LoaderDep) -> dict[str, int]:
        """What the loader holds: cached bytes, loads in flight, HTTP requests made, files;
        and the PNG route's render cache: its bytes, renders made, cache hits."""
        renders = get_renders(request)
        return {
            "cache_bytes": loader.cache.size_bytes,
            "in_flight": loader.in_flight,
            "http_requests": loader.http.requests,
            "files": len(loader.files),
            "files_bytes": loader.files.size_bytes,
            "render_cache_bytes": renders.size_bytes,
            "renders": renders.renders,
            "render_hits": renders.hits,
        }

    @app.post("/files", status_code=201, openapi_extra=_UPLOAD_BODY)
    async def upload_file(request: Request, loader: LoaderDep) -> Response:
        """Keep a DICOM Part 10 file (form field ``file``, or an ``application/dicom`` body).

        Answers 201 with its imageId and the imageIds of its frames, which
        ``GET /images/...`` serves until ``DELETE /files/...``.
        """
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        form = media_type == "multipart/form-data"
        if not form and media_type != "application/dicom":
            message = "send the file as multipart/form-data (field 'file') or application/dicom"
            return _refused(415, "UnsupportedMediaType", message)
        room = loader.files.max_bytes - loader.files.size_bytes
        length_header = request.headers.get("content-length")
        if length_header is None and form:
            message = "a multipart upload must say its Content-Length"
            return _refused(411, "LengthRequired", message)
        try:
            length = None if length_header is None else int(length_header)
        except ValueError:
            return _refused(400, "BadRequest", "Content-Length is not a number")
        if length is not None and length > room + (FORM_OVERHEAD if form else 0):
            return _too_large(loader, length)

        try:
            data = await (_read_form_file(request) if form else _read_body(request, loader))
        except ClientDisconnect:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        if isinstance(data, Response):
            return data
        try:
            image_id = loader.files.add(data)
        except ImageTooLargeError as exc:  # uploads that arrived together took the room
            return _refused(413, exc)

        try:
            await loader.load_metadata([image_id], request_type="interaction")
        except (DecodeError, MetadataError) as exc:  # not DICOM, or not an image
            loader.files.remove(image_id)
            return _refused(422, exc)
        except ImageTooLargeError as exc:  # over a frame or pixel limit
            loader.files.remove(image_id)
            return _refused(413, exc)
        except BaseException:
            loader.files.remove(image_id)
            raise
        multiframe = loader.metadata.get("multiframeModule", image_id)
        frames = multiframe.number_of_frames if multiframe is not None else 1
        return JSONResponse(
            {
                "image_id": image_id,
                "frames": [f"{image_id}?frame={n}" for n in range(1, frames + 1)],
                "number_of_frames": frames,
            },
            status_code=201,
        )

    @app.delete("/files/{image_id:path}", status_code=204)
    async def delete_file(image_id: str, loader: LoaderDep) -> Response:
        """Release an uploaded file (its frames, cached images and metadata go with it)."""
        if not loader.files.remove(image_id):
            raise NotFoundError("no such uploaded file", image_id=image_id)
        return Response(status_code=204)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2, help="decode processes")
    parser.add_argument(
        "--max-files-bytes",
        type=int,
        default=None,
        help="the most bytes of uploaded files held at once (default: 512 MiB)",
    )
    args = parser.parse_args()
    print(f"serving on http://{args.host}:{args.port} (samples: {SAMPLES})", flush=True)
    app = create_app(max_web_workers=args.workers, max_files_bytes=args.max_files_bytes)
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
