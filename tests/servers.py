"""Small pieces shared by the local test servers (fault injection on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pydicom
from aiohttp import web
from aiohttp.test_utils import TestServer


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestServer]:
    """Run ``app`` on a free port of 127.0.0.1 for the block."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def cut_short(
    request: web.Request, body: bytes, content_type: str, pause: float = 0.0
) -> web.StreamResponse:
    """Promise ``body`` (Content-Length), send half, optionally stall, then drop the connection."""
    resp = web.StreamResponse(
        headers={"Content-Type": content_type, "Content-Length": str(len(body))}
    )
    await resp.prepare(request)
    await resp.write(body[: len(body) // 2])
    if pause:
        await asyncio.sleep(pause)
    if request.transport is not None:
        request.transport.abort()
    return resp


def instance_json(ds: pydicom.Dataset) -> dict[str, Any]:
    """The dataset as WADO-RS instance metadata (DICOM JSON, without its pixel data)."""
    meta = ds.to_json_dict(bulk_data_threshold=1 << 30)
    meta.pop("7FE00010", None)
    return meta
