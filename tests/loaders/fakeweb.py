"""A small DICOMweb server on loopback for fault injection (not a stand-in for Orthanc).

It serves one instance built from a real file: its metadata as DICOM JSON and its
frames as multipart/related, with a fault chosen per test: a missing closing
boundary, a wrong Content-Type, a body cut short, a slow body, an odd-offset frame,
a single-part body, a status, a body sent 2 KiB at a time ("drip"), or one that
honours ``Range`` with 206 ("range"; otherwise ``Range`` is ignored). Every request
is counted.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pydicom
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydicom.encaps import generate_frames

from tests.servers import cut_short, instance_json, serve

BOUNDARY = "imageloader-test-boundary"
STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


@dataclass
class FakeDicomWeb:
    server: TestServer
    frames: list[bytes]
    syntax: str
    metadata: dict[str, object]
    fault: str = ""
    status: int = 200
    hits: Counter[str] = field(default_factory=Counter)
    frame_requests: list[str] = field(default_factory=list)
    requested: asyncio.Event = field(default_factory=asyncio.Event)
    #: "drip": bytes of the frames body sent so far; "range": the Range headers asked.
    sent: int = 0
    ranges: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return str(self.server.make_url("/dicom-web"))

    def image_id(self, frame: int = 1) -> str:
        return f"wadors:{self.base}/studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/{frame}"


def _frames(ds: pydicom.Dataset) -> list[bytes]:
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    size = len(ds.PixelData) // count
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(count)]


def _multipart(parts: list[bytes], syntax: str, preamble: bytes = b"") -> bytes:
    out = [preamble]
    for data in parts:
        out.append(
            f"--{BOUNDARY}\r\nContent-Type: application/octet-stream; "
            f"transfer-syntax={syntax}\r\n\r\n".encode()
        )
        out.append(data)
        out.append(b"\r\n")
    out.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(out)


def build_app(state: FakeDicomWeb) -> web.Application:
    prefix = f"/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{SOP}"

    async def metadata(request: web.Request) -> web.Response:
        state.hits["metadata"] += 1
        return web.json_response([state.metadata], content_type="application/dicom+json")

    async def frames(request: web.Request) -> web.StreamResponse:
        state.hits["frames"] += 1
        state.frame_requests.append(request.match_info["frames"])
        state.requested.set()
        if state.status != 200:
            return web.Response(status=state.status, text="no")
        numbers = [int(n) for n in request.match_info["frames"].split(",")]
        parts = [state.frames[n - 1] for n in numbers]
        ctype = f'multipart/related; type="application/octet-stream"; boundary={BOUNDARY}'
        fault = state.fault
        single = f"application/octet-stream; transfer-syntax={state.syntax}"
        if fault == "single-part":
            return web.Response(
                body=parts[0],
                headers={"Content-Type": single},
            )
        body = _multipart(parts, state.syntax)
        if fault == "odd-offset":
            # A preamble line of the right length puts the first frame at an odd offset.
            offset = body.index(parts[0])
            body = _multipart(parts, state.syntax, b"x\r\n" if offset % 2 == 0 else b"xx\r\n")
            assert body.index(parts[0]) % 2 == 1
        if fault == "no-closing-boundary":
            body = body[: body.rindex(f"--{BOUNDARY}--".encode())]
        if fault == "wrong-content-type":
            return web.Response(body=b"<html>login</html>", content_type="text/html")
        if fault == "wrong-boundary":
            ctype = 'multipart/related; type="application/octet-stream"; boundary=other'
        if fault in ("cut", "slow"):
            return await cut_short(request, body, ctype, pause=30 if fault == "slow" else 0)
        if fault == "drip":
            resp = web.StreamResponse(
                headers={"Content-Type": ctype, "Content-Length": str(len(body))}
            )
            await resp.prepare(request)
            for start in range(0, len(body), 2048):
                await resp.write(body[start : start + 2048])
                state.sent = min(len(body), start + 2048)
                await asyncio.sleep(0.005)
            await resp.write_eof()
            return resp
        asked = request.headers.get("Range")
        if fault == "range" and asked:
            state.ranges.append(asked)
            first, _, last = asked.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last) if last else len(body) - 1, len(body) - 1)
            return web.Response(
                status=206,
                body=body[start : end + 1],
                headers={
                    "Content-Type": ctype,
                    "Content-Range": f"bytes {start}-{end}/{len(body)}",
                },
            )
        return web.Response(body=body, headers={"Content-Type": ctype})

    app = web.Application()
    app.router.add_get(f"{prefix}/metadata", metadata)
    app.router.add_get(f"{prefix}/frames/{{frames}}", frames)
    return app


@asynccontextmanager
async def fake_dicomweb(path: str) -> AsyncIterator[FakeDicomWeb]:
    ds = pydicom.dcmread(path)
    meta = instance_json(ds)
    meta["0020000D"] = {"vr": "UI", "Value": [STUDY]}
    meta["0020000E"] = {"vr": "UI", "Value": [SERIES]}
    meta["00080018"] = {"vr": "UI", "Value": [SOP]}
    state = FakeDicomWeb(None, _frames(ds), str(ds.file_meta.TransferSyntaxUID), meta)  # type: ignore[arg-type]
    async with serve(build_app(state)) as server:
        state.server = server
        yield state
