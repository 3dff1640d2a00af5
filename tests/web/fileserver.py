"""A local aiohttp server of in-memory files that counts what it really sends.

``bytes_sent[name]`` is what each response handed to the socket before it finished
or the client went away, so a test can tell a header-only read from a whole
download; ``completed[name]`` counts responses sent in full. Bodies go out in
``chunk``-byte writes, ``pause`` seconds apart, so a client that stops reading
early is seen to stop the download.
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
class FileServer:
    server: TestServer
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    bytes_sent: Counter[str] = field(default_factory=Counter)
    completed: Counter[str] = field(default_factory=Counter)
    chunk: int = 16 << 10
    pause: float = 0.0
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    def add(self, name: str, body: bytes, content_type: str = "application/octet-stream") -> str:
        self.files[name] = (body, content_type)
        return self.url(name)

    def url(self, name: str) -> str:
        return str(self.server.make_url(f"/files/{name}"))

    async def sent(self, name: str, at_least: int) -> None:
        """Return once ``at_least`` bytes of ``name`` have been sent in all."""
        async with self.progress:
            await self.progress.wait_for(lambda: self.bytes_sent[name] >= at_least)


def build_app(state: FileServer) -> web.Application:
    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        state.hits[name] += 1
        if name not in state.files:
            return web.Response(status=404, text="no such file")
        body, content_type = state.files[name]
        response = web.StreamResponse(
            headers={"Content-Type": content_type, "Content-Length": str(len(body))}
        )
        await response.prepare(request)
        try:
            for start in range(0, len(body), state.chunk):
                piece = body[start : start + state.chunk]
                await response.write(piece)
                state.bytes_sent[name] += len(piece)
                async with state.progress:
                    state.progress.notify_all()
                if state.pause:
                    await asyncio.sleep(state.pause)
            await response.write_eof()
        except ConnectionError:
            return response  # the client stopped reading: what was sent is counted
        state.completed[name] += 1
        return response

    app = web.Application()
    app.router.add_get("/files/{name:.+}", serve)
    return app


@asynccontextmanager
async def file_server() -> AsyncIterator[FileServer]:
    state = FileServer(server=None)  # type: ignore[arg-type]
    async with serve(build_app(state)) as server:
        state.server = server
        yield state
