"""A DICOMweb origin that misbehaves on purpose, for fault matrices and soak runs.

Serves ``instances`` copies of one real DICOM file (distinct SOP UIDs) as WADO-RS:
instance metadata as DICOM JSON and frames as multipart/related. Each frame request
meets a fault drawn with the configured probabilities (or forced by a per-instance
override): 500, 503 with Retry-After, reset mid-body, a missing closing boundary, a
slow body, a corrupt codestream, an empty body. Requests and faults are counted.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pydicom
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydicom.encaps import generate_frames

from tests.servers import cut_short, instance_json, serve

BOUNDARY = "faultweb-boundary"
STUDY, SERIES = "2.25.1", "2.25.1.1"
FAULTS = ("500", "503", "reset", "no-close", "slow", "corrupt", "empty")


@dataclass
class FaultWeb:
    server: TestServer
    frame: bytes
    syntax: str
    metadata: dict[str, object]
    instances: int
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    forced: dict[int, str] = field(default_factory=dict)
    metadata_override: dict[int, dict[str, object]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(1234))
    requests: Counter[str] = field(default_factory=Counter)
    served_faults: Counter[str] = field(default_factory=Counter)

    def image_id(self, instance: int) -> str:
        base = self.server.make_url("/dicom-web")
        return (
            f"wadors:{base}/studies/{STUDY}/series/{SERIES}/instances/2.25.1.1.{instance}/frames/1"
        )

    def image_ids(self) -> list[str]:
        return [self.image_id(i) for i in range(self.instances)]


def _part(data: bytes, syntax: str) -> bytes:
    return (
        (
            f"--{BOUNDARY}\r\nContent-Type: application/octet-stream; transfer-syntax={syntax}"
            f"\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
    )


def build_app(state: FaultWeb) -> web.Application:
    prefix = f"/dicom-web/studies/{STUDY}/series/{SERIES}/instances/2.25.1.1.{{n}}"

    async def metadata(request: web.Request) -> web.Response:
        state.requests["metadata"] += 1
        n = request.match_info["n"]
        meta = dict(state.metadata)
        meta["00080018"] = {"vr": "UI", "Value": [f"2.25.1.1.{n}"]}
        meta.update(state.metadata_override.get(int(n), {}))
        return web.json_response([meta], content_type="application/dicom+json")

    async def frames(request: web.Request) -> web.StreamResponse:
        state.requests["frames"] += 1
        n = int(request.match_info["n"])
        fault = state.forced.get(n)
        if fault is None and state.rng.random() < state.fault_rate:
            fault = state.rng.choice(state.faults)
        ctype = f'multipart/related; type="application/octet-stream"; boundary={BOUNDARY}'
        frame = state.frame
        if fault:
            state.served_faults[fault] += 1
        if fault is not None and fault.isdigit():
            return web.Response(status=int(fault), text="no", headers={"Retry-After": "0"})
        if fault == "empty":
            return web.Response(body=b"", headers={"Content-Type": ctype})
        if fault == "corrupt":
            frame = frame[: len(frame) // 3] + bytes(64) + frame[len(frame) // 3 + 64 :]
        body = _part(frame, state.syntax) + f"--{BOUNDARY}--\r\n".encode()
        if fault == "no-close":
            body = body[: body.rindex(f"--{BOUNDARY}--".encode())]
        if fault in ("reset", "slow"):
            return await cut_short(request, body, ctype, pause=5 if fault == "slow" else 0)
        return web.Response(body=body, headers={"Content-Type": ctype})

    app = web.Application()
    app.router.add_get(f"{prefix}/metadata", metadata)
    app.router.add_get(f"{prefix}/frames/{{frames}}", frames)
    return app


@asynccontextmanager
async def fault_web(path: str, instances: int, fault_rate: float = 0.0) -> AsyncIterator[FaultWeb]:
    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    else:
        frame = bytes(ds.PixelData)
    meta = instance_json(ds)
    state = FaultWeb(
        None,  # type: ignore[arg-type]
        frame,
        str(ds.file_meta.TransferSyntaxUID),
        meta,
        instances,
        fault_rate,
    )
    async with serve(build_app(state)) as server:
        state.server = server
        yield state
