"""A FastAPI service: images as PNG and metadata as JSON, by imageId.

Run it::

    python examples/fastapi_app.py --port 8000

then, with the imageId percent-encoded into the path::

    CT=$(python -c 'import pydicom.data as d; print(d.get_testdata_file("CT_small.dcm"))')
    ID=$(python -c "import sys, urllib.parse as u; print(u.quote(sys.argv[1], safe=''))" \\
        "dicomfile:$CT")
    curl -o ct.png "http://127.0.0.1:8000/images/$ID?window_center=40&window_width=400&size=256"
    curl "http://127.0.0.1:8000/metadata/imagePixelModule/$ID"

It takes imageIds from its users, so it only loads what its access policy allows
(anything else is answered 403 and never fetched). Configure it with environment
variables (comma-separated lists):

- ``IMAGELOADER_SCHEMES``: allowed schemes (default ``dicomfile,wadouri,wadors``);
- ``IMAGELOADER_HOSTS``: allowed HTTP hosts, ``host`` or ``host:port``
  (default ``127.0.0.1,localhost``: point it at your PACS);
- ``IMAGELOADER_ROOTS``: folders ``dicomfile:`` paths must be inside (default: the
  sample files that ship with pydicom, so it works with no server at all).

Errors are JSON: 400 malformed imageId, 403 not allowed, 404 not found, 502 the
upstream failed or sent something unusable, 504 it timed out.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pydicom
import uvicorn
from fastapi import FastAPI

from imageloader import AccessPolicy
from imageloader.integrations.fastapi import (
    LoaderDep,
    add_error_handlers,
    image_router,
    imageloader_lifespan,
)

SAMPLES = Path(pydicom.__file__).parent / "data" / "test_files"


def _list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def policy_from_environment() -> AccessPolicy:
    """The access policy the environment variables describe."""
    return AccessPolicy(
        schemes=_list("IMAGELOADER_SCHEMES", "dicomfile,wadouri,wadors"),
        hosts=_list("IMAGELOADER_HOSTS", "127.0.0.1,localhost"),
        roots=_list("IMAGELOADER_ROOTS", str(SAMPLES)),
    )


def create_app(access: AccessPolicy | None = None, *, max_web_workers: int = 2) -> FastAPI:
    """The app: one ImageLoader for its life, the image routes, JSON errors."""
    app = FastAPI(
        title="imageloader example",
        lifespan=imageloader_lifespan(
            access=access or policy_from_environment(),
            max_web_workers=max_web_workers,
            max_cache_size_bytes=512 << 20,
        ),
    )
    app.include_router(image_router())
    add_error_handlers(app)

    @app.get("/stats")
    async def stats(loader: LoaderDep) -> dict[str, int]:
        """What the loader holds: cached bytes, loads in flight, HTTP requests made."""
        return {
            "cache_bytes": loader.cache.size_bytes,
            "in_flight": loader.in_flight,
            "http_requests": loader.http.requests,
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2, help="decode processes")
    args = parser.parse_args()
    print(f"serving on http://{args.host}:{args.port} (samples: {SAMPLES})", flush=True)
    uvicorn.run(create_app(max_web_workers=args.workers), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
