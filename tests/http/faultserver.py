"""A local aiohttp server with fault routes, for fault injection (not a stand-in for PACS).

Routes take their behaviour from the path and query, and every request is recorded
(path and headers) so tests can see what the client really sent.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.servers import serve


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]


@dataclass
class FaultServer:
    server: TestServer
    requests: list[Recorded] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)
    open_connections: int = 0

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


def build_app(state: FaultServer) -> web.Application:
    routes = web.RouteTableDef()

    @web.middleware
    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        state.requests.append(Recorded(request.path_qs, dict(request.headers)))
        state.hits[request.path] += 1
        return await handler(request)

    @routes.get("/ok")
    async def ok(request: web.Request) -> web.Response:
        size = int(request.query.get("size", "16"))
        return web.Response(body=b"x" * size, content_type="application/octet-stream")

    @routes.get("/flaky")
    async def flaky(request: web.Request) -> web.Response:
        # Fails `fails` times with `status`, then succeeds.
        fails = int(request.query.get("fails", "1"))
        status = int(request.query.get("status", "500"))
        if state.hits[request.path] <= fails:
            headers = {}
            if "retry_after" in request.query:
                headers["Retry-After"] = request.query["retry_after"]
            return web.Response(status=status, text="try again", headers=headers)
        return web.Response(body=b"finally", content_type="application/octet-stream")

    @routes.get("/status/{code}")
    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="no")

    @routes.get("/reset")
    async def reset(request: web.Request) -> web.StreamResponse:
        # Promise 1 MB, send a little, then drop the connection.
        resp = web.StreamResponse(headers={"Content-Length": str(1 << 20)})
        await resp.prepare(request)
        await resp.write(b"y" * 1000)
        assert request.transport is not None
        request.transport.abort()
        return resp

    @routes.get("/reset-once")
    async def reset_once(request: web.Request) -> web.StreamResponse:
        if state.hits[request.path] == 1:
            return await reset(request)
        return web.Response(body=b"second time lucky")

    @routes.get("/slow")
    async def slow(request: web.Request) -> web.StreamResponse:
        # A slow drip: one byte, then silence longer than the client's read timeout.
        resp = web.StreamResponse(headers={"Content-Length": "100"})
        await resp.prepare(request)
        await resp.write(b"z")
        await asyncio.sleep(float(request.query.get("pause", "5")))
        await resp.write(b"z" * 99)
        return resp

    @routes.get("/drip")
    async def drip(request: web.Request) -> web.StreamResponse:
        # A drip that never goes silent for long: one byte every ``every`` seconds.
        count = int(request.query.get("bytes", "100"))
        resp = web.StreamResponse(headers={"Content-Length": str(count)})
        await resp.prepare(request)
        for _ in range(count):
            await resp.write(b"d")
            await asyncio.sleep(float(request.query.get("every", "0.2")))
        return resp

    @routes.get("/chunked")
    async def chunked(request: web.Request) -> web.StreamResponse:
        total = int(request.query.get("size", "1000"))
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = 0
        while sent < total:
            piece = min(65536, total - sent)
            await resp.write(b"c" * piece)
            sent += piece
        await resp.write_eof()
        return resp

    @routes.get("/gzip-bomb")
    async def gzip_bomb(request: web.Request) -> web.Response:
        # 10 MB of zeros, a few KB on the wire.
        import gzip

        body = gzip.compress(b"\0" * 10_000_000)
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/dicom"}
        )

    @routes.get("/redirect")
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    @routes.get("/set-cookie")
    async def set_cookie(request: web.Request) -> web.Response:
        response = web.Response(text="set")
        response.set_cookie("session", request.query.get("value", "secret"))
        to = request.query.get("to")
        if to is not None:
            response.set_status(302)
            response.headers["Location"] = to
        return response

    @routes.get("/echo-cookie")
    async def echo_cookie(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("Cookie", "<none>"))

    @routes.get("/echo-auth")
    async def echo_auth(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("Authorization", "<none>"))

    app = web.Application(middlewares=[record])
    app.add_routes(routes)
    return app


@asynccontextmanager
async def fault_server() -> AsyncIterator[FaultServer]:
    state = FaultServer(server=None)  # type: ignore[arg-type]
    async with serve(build_app(state)) as server:
        state.server = server
        yield state
