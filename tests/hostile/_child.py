"""One hostile case, run in its own process: ``python -m tests.hostile._child SPEC.json``.

The spec names an imageId (``{base}`` stands for a loopback server this process
starts, serving ``routes``: path → body file and headers) and the ``Limits`` fields
to change (none: the defaults). The process loads it through
the public API with one decode worker and prints one JSON line: the outcome, the
exception's type and message, the seconds the load took and the address-space cap
it ran under.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Any

#: The longest the event loop went without running a 10 ms heartbeat, in seconds.
LOOP_LAG = [0.0]


async def _heartbeat() -> None:
    while True:
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        LOOP_LAG[0] = max(LOOP_LAG[0], time.perf_counter() - before - 0.01)


async def _load(spec: dict[str, Any], base: str) -> None:
    from imageloader import AccessPolicy, HttpOptions, ImageLoader, Limits

    limits = Limits(**spec.get("limits", {}))
    http = HttpOptions(**spec.get("http", {}))
    access = AccessPolicy(**spec["access"]) if "access" in spec else None
    image_id = spec["image_id"].replace("{base}", base)
    async with ImageLoader(
        max_web_workers=1, limits=limits, http=http, access=access, decode_timeout=60.0
    ) as loader:
        # Start-up is not the input's cost: the worker's start, and the loader modules'
        # first import (pydicom's, a few hundred ms on the loop, once per process).
        await loader.decode_pool.warm()
        for module in ("dicom.dicomfile", "dicom.wadouri", "dicom.wadors", "web", "nifti.loader"):
            importlib.import_module(f"imageloader.{module}")
        heartbeat = asyncio.ensure_future(_heartbeat())
        try:
            image = await loader.load_image(image_id)
        finally:
            heartbeat.cancel()
        print(json.dumps({"rows": image.rows, "columns": image.columns}), file=sys.stderr)


async def _serve_and_load(spec: dict[str, Any], bodies: dict[str, bytes]) -> None:
    routes: dict[str, dict[str, Any]] = spec.get("routes", {})
    if not routes:
        await _load(spec, "")
        return
    from aiohttp import web

    async def handler(request: web.Request) -> web.StreamResponse:
        route = routes.get(request.path)
        if route is None:
            raise web.HTTPNotFound()
        body, headers = bodies[request.path], route.get("headers", {})
        if not route.get("drip"):
            return web.Response(body=body, headers=headers)
        # A slow drip: one byte every 0.2 s, never silent long enough for a read timeout.
        response = web.StreamResponse(headers={**headers, "Content-Length": str(len(body))})
        await response.prepare(request)
        for index in range(len(body)):
            await response.write(body[index : index + 1])
            await asyncio.sleep(0.2)
        return response

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        await _load(spec, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def main() -> None:
    warnings.simplefilter("ignore")
    spec = json.loads(Path(sys.argv[1]).read_text())
    bodies = {
        path: Path(route["file"]).read_bytes() for path, route in spec.get("routes", {}).items()
    }
    start = time.perf_counter()
    result: dict[str, Any]
    try:
        asyncio.run(_serve_and_load(spec, bodies))
    except BaseException as exc:  # report whatever comes out, typed or not
        from imageloader.errors import ImageLoaderError

        result = {
            "outcome": "raised",
            "type": type(exc).__name__,
            "typed": isinstance(exc, ImageLoaderError),
            "message": str(exc)[:1000],
        }
    else:
        result = {"outcome": "ok", "type": None, "typed": False, "message": ""}
    result["seconds"] = time.perf_counter() - start
    result["loop_lag"] = LOOP_LAG[0]
    result["address_space"] = resource.getrlimit(resource.RLIMIT_AS)[0]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
