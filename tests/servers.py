"""Small pieces shared by the local test servers (fault injection on loopback), and by
the tests that run a web app in a subprocess as a user would."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
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


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Loopback traffic must never go through a proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    """GET ``url``: (status, body), error statuses included."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


@contextlib.contextmanager
def served(
    command: Callable[[int], list[str]], *, cwd: Path | None = None, start_timeout: float = 30
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``command(port)`` (a web app) until its ``/openapi.json`` answers; yield its base URL.

    On leaving, Ctrl-C stops it and it must exit 0 (killed if it has not within 30 s).
    """
    port = free_port()
    process = subprocess.Popen(
        command(port), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                if http_get(f"{base}/openapi.json")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.1)
        yield base, process
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
