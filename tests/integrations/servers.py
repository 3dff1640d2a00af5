"""Servers for the integration tests: a counting origin, and uvicorn in a thread.

:class:`Origin` is a small aiohttp server on loopback that serves DICOM files for
``wadouri:`` and counts every request, so a test can prove how many fetches reached
it (Orthanc cannot count). ``/stall`` answers nothing and records when the client
drops the connection, to prove a load was cancelled. :class:`UvicornThread` runs an
ASGI app in a real uvicorn on a socket bound here, in a thread with its own loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import uvicorn
from aiohttp import web
from aiohttp.test_utils import TestServer

SAMPLES = Path(pydicom.__file__).parent / "data" / "test_files"


@dataclass
class Origin:
    """What the origin saw: requests per path, and whether a stalled client left."""

    server: TestServer
    hits: Counter[str] = field(default_factory=Counter)
    stall_started: asyncio.Event = field(default_factory=asyncio.Event)
    stall_dropped: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def wadouri(self, name: str, **query: Any) -> str:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"wadouri:{self.url('/dicom/' + name)}" + (f"?{params}" if params else "")


def _origin_app(origin_ref: list[Origin]) -> web.Application:
    async def dicom(request: web.Request) -> web.StreamResponse:
        origin = origin_ref[0]
        name = request.match_info["name"]
        origin.hits[request.path] += 1
        delay = float(request.query.get("delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        if request.query.get("status"):
            return web.Response(status=int(request.query["status"]), text="no")
        if request.query.get("garbage"):
            return web.Response(body=b"not a DICOM file" * 64, content_type="application/dicom")
        path = SAMPLES / name
        if not path.is_file():
            return web.Response(status=404, text="no such object")
        body = await asyncio.to_thread(path.read_bytes)
        return web.Response(body=body, content_type="application/dicom")

    async def stall(request: web.Request) -> web.StreamResponse:
        origin = origin_ref[0]
        origin.hits[request.path] += 1
        origin.stall_started.set()
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                transport = request.transport
                if transport is None or transport.is_closing():
                    origin.stall_dropped.set()
                    break
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            # aiohttp cancels a handler whose client has gone: that is the drop.
            origin.stall_dropped.set()
            raise
        return web.Response(status=504)

    app = web.Application()
    app.router.add_get("/dicom/{name}", dicom)
    app.router.add_get("/stall", stall)
    return app


@asynccontextmanager
async def run_origin() -> AsyncIterator[Origin]:
    """An :class:`Origin` on a free loopback port for the duration of the block."""
    ref: list[Origin] = []
    server = TestServer(_origin_app(ref), host="127.0.0.1")
    await server.start_server()
    ref.append(Origin(server))
    try:
        yield ref[0]
    finally:
        await server.close()


class UvicornThread:
    """A real uvicorn serving ``app`` on 127.0.0.1 (a free port), in its own thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="uvicorn", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError("uvicorn did not stop")
