"""The FastAPI integration in a real uvicorn on loopback, with concurrent httpx clients.

Fetches are counted at the origin (a local aiohttp server serving DICOM files for
``wadouri:``), so "one fetch for many requests" and "refused, never fetched" are
measured where they happen, not inferred.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image as PILImage

from imageloader import AccessPolicy, ImageLoader
from imageloader.http import HttpOptions
from imageloader.integrations.fastapi import (
    LoaderDep,
    add_error_handlers,
    image_router,
    imageloader_lifespan,
    render_png,
)
from imageloader.levels import at_level
from imageloader.metadata import module_to_json
from tests.integrations.servers import SAMPLES, Origin, UvicornThread, run_origin
from tests.processes import worker_children

CT = SAMPLES / "CT_small.dcm"


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with run_origin() as server:
        yield server


@pytest.fixture
async def other_origin() -> AsyncIterator[Origin]:
    """A second origin that the access policy does not allow."""
    async with run_origin() as server:
        yield server


def make_app(origin: Origin, root: Path, *, read_timeout: float = 1.0) -> FastAPI:
    access = AccessPolicy(schemes={"wadouri", "dicomfile"}, hosts={origin.host}, roots=[root])
    app = FastAPI(
        lifespan=imageloader_lifespan(
            access=access,
            max_web_workers=1,
            http=HttpOptions(retries=0, read_timeout=read_timeout),
        )
    )
    app.include_router(image_router())
    add_error_handlers(app)

    @app.get("/in-flight")
    async def in_flight(loader: LoaderDep) -> int:
        return loader.in_flight

    return app


@pytest.fixture
async def service(origin: Origin) -> AsyncIterator[UvicornThread]:
    before = set(worker_children())
    server = UvicornThread(make_app(origin, SAMPLES))
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)
    # The lifespan closed the loader: its decode process is gone with it.
    assert set(worker_children()) <= before


def path(route: str, image_id: str) -> str:
    return f"{route}/{quote(image_id, safe='')}"


def png_array(body: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(body)))


async def local_image(image_id: str):  # type: ignore[no-untyped-def]
    async with ImageLoader(max_web_workers=0) as loader:
        return await loader.load_image(image_id), loader.metadata.modules(image_id)


async def test_many_clients_one_fetch_and_the_right_pixels(
    service: UvicornThread, origin: Origin
) -> None:
    # The origin answers after 0.4 s, so all 24 requests arrive while the load is in flight.
    image_id = origin.wadouri("CT_small.dcm", delay="0.4")
    async with httpx.AsyncClient(base_url=service.url, timeout=20, trust_env=False) as client:
        responses = await asyncio.gather(
            *(client.get(path("/images", image_id)) for _ in range(24))
        )
        assert {r.status_code for r in responses} == {200}
        assert {r.headers["content-type"] for r in responses} == {"image/png"}
        assert len({r.content for r in responses}) == 1
        assert origin.hits["/dicom/CT_small.dcm"] == 1
        # Later requests are cache hits: still one fetch.
        again = await client.get(path("/images", image_id), params={"size": 64})
        assert again.status_code == 200
        assert origin.hits["/dicom/CT_small.dcm"] == 1

    local, _ = await local_image(f"dicomfile:{CT}")
    assert np.array_equal(png_array(responses[0].content), png_array(render_png(local)))
    small = png_array(again.content)
    assert small.shape == (64, 64)
    # 64 of 128: decode level 1, made from the cached full image (no fetch, no decode).
    assert np.array_equal(small, png_array(render_png(at_level(local, 1), size=64)))


async def test_window_and_size_parameters(service: UvicornThread) -> None:
    image_id = f"dicomfile:{CT}"
    local, _ = await local_image(image_id)
    params = {"window_center": 40, "window_width": 400, "size": 100}
    async with httpx.AsyncClient(base_url=service.url, timeout=20, trust_env=False) as client:
        windowed = await client.get(path("/images", image_id), params=params)
        default = await client.get(path("/images", image_id), params={"size": 100})
        bad = await client.get(path("/images", image_id), params={"size": 0})
    assert windowed.status_code == default.status_code == 200
    expected = render_png(local, window_center=40, window_width=400, size=100)
    assert np.array_equal(png_array(windowed.content), png_array(expected))
    assert png_array(windowed.content).shape == (100, 100)
    assert not np.array_equal(png_array(windowed.content), png_array(default.content))
    assert bad.status_code == 422  # FastAPI's own validation of the query


async def test_metadata_route(service: UvicornThread) -> None:
    image_id = f"dicomfile:{CT}"
    _, modules = await local_image(image_id)
    async with httpx.AsyncClient(base_url=service.url, timeout=20, trust_env=False) as client:
        pixel = await client.get(path("/metadata/imagePixelModule", image_id))
        plane = await client.get(path("/metadata/imagePlaneModule", image_id))
        unknown = await client.get(path("/metadata/noSuchModule", image_id))
        missing = await client.get(path("/metadata/imagePixelModule", f"dicomfile:{SAMPLES}/x.dcm"))
    assert pixel.status_code == plane.status_code == 200
    assert pixel.json() == module_to_json(modules["imagePixelModule"])
    assert plane.json()["image_position_patient"] == list(
        modules["imagePlaneModule"].image_position_patient
    )
    assert unknown.status_code == 404 and unknown.json()["error"] == "UnknownModule"
    assert missing.status_code == 404 and missing.json()["error"] == "NotFoundError"


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("malformed", 400, "InvalidImageIdError"),
        ("no-scheme", 400, "InvalidImageIdError"),
        ("missing-file", 404, "NotFoundError"),
        ("frame-past-the-end", 404, "NotFoundError"),
        ("origin-404", 404, "NotFoundError"),
        ("origin-500", 502, "FetchError"),
        ("garbage", 502, None),
        ("slow", 504, "LoadTimeoutError"),
    ],
)
async def test_errors_are_json_with_the_right_status(
    service: UvicornThread, origin: Origin, case: str, status: int, error: str | None
) -> None:
    image_id = {
        "malformed": "wadouri:not-a-url",
        "no-scheme": f"{SAMPLES}/CT_small.dcm",
        "missing-file": f"dicomfile:{SAMPLES}/no-such-file.dcm",
        "frame-past-the-end": f"dicomfile:{SAMPLES}/CT_small.dcm?frame=2",
        "origin-404": origin.wadouri("no-such-object.dcm"),
        "origin-500": origin.wadouri("CT_small.dcm", status="500"),
        "garbage": origin.wadouri("CT_small.dcm", garbage="1"),
        "slow": origin.wadouri("CT_small.dcm", delay="3"),  # read_timeout is 1 s
    }[case]
    async with httpx.AsyncClient(base_url=service.url, timeout=20, trust_env=False) as client:
        response = await client.get(path("/images", image_id))
    assert response.status_code == status, response.text
    body = response.json()
    assert body["message"]
    if error is not None:
        assert body["error"] == error
    if case == "no-scheme":
        assert "no scheme" in body["message"]
    if case == "frame-past-the-end":
        assert "frame 2 of 1 does not exist" in body["message"]
    if case != "malformed":
        assert body["image_id"] == image_id


async def test_access_policy_refuses_without_fetching(
    origin: Origin, other_origin: Origin, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ct.dcm").write_bytes(CT.read_bytes())
    (root / "escape.dcm").symlink_to(SAMPLES / "MR_small.dcm")
    server = UvicornThread(make_app(origin, root))
    await asyncio.to_thread(server.start)
    try:
        refused = [
            other_origin.wadouri("CT_small.dcm"),  # host not allowed
            f"wadors:{origin.url('/dicom-web')}/studies/1/series/2/instances/3/frames/1",  # scheme
            f"dicomfile:{SAMPLES}/CT_small.dcm",  # outside the root
            f"dicomfile:{root}/escape.dcm",  # a symlink out of the root
            f"dicomfile:{root}/../root/../../etc/passwd",
        ]
        async with httpx.AsyncClient(base_url=server.url, timeout=20, trust_env=False) as client:
            answers = [await client.get(path("/images", i)) for i in refused]
            meta = await client.get(path("/metadata/imagePixelModule", refused[0]))
            allowed = await client.get(path("/images", origin.wadouri("CT_small.dcm")))
            local = await client.get(path("/images", f"dicomfile:{root}/ct.dcm"))
    finally:
        await asyncio.to_thread(server.stop)
    assert [a.status_code for a in answers] == [403] * len(refused), [a.text for a in answers]
    assert {a.json()["error"] for a in answers} == {"AccessDeniedError"}
    # The other origin differs from the allowed one by its port only: the message says so.
    assert f"host '{other_origin.host}' is not allowed" in answers[0].json()["message"]
    assert meta.status_code == 403
    assert sum(other_origin.hits.values()) == 0  # never fetched
    assert sum(origin.hits.values()) == 1  # only the allowed request reached an origin
    assert allowed.status_code == local.status_code == 200


async def test_a_client_that_disconnects_cancels_its_load(origin: Origin) -> None:
    # A read timeout far beyond the test's waits: only the disconnect can end the load.
    service = UvicornThread(make_app(origin, SAMPLES, read_timeout=60))
    await asyncio.to_thread(service.start)
    try:
        await _disconnect(service, origin)
    finally:
        await asyncio.to_thread(service.stop)


async def _disconnect(service: UvicornThread, origin: Origin) -> None:
    image_id = f"wadouri:{origin.url('/stall')}"
    async with httpx.AsyncClient(base_url=service.url, timeout=20, trust_env=False) as client:
        request = asyncio.ensure_future(client.get(path("/images", image_id)))
        await asyncio.wait_for(origin.stall_started.wait(), 10)
        assert (await client.get("/in-flight")).json() == 1
        request.cancel()  # the client goes away mid-request
        with pytest.raises(asyncio.CancelledError):
            await request
        # The cancelled load dropped its connection to the origin...
        await asyncio.wait_for(origin.stall_dropped.wait(), 5)
        # ...and left nothing in flight.
        for _ in range(100):
            if (await client.get("/in-flight")).json() == 0:
                break
            await asyncio.sleep(0.05)
        assert (await client.get("/in-flight")).json() == 0
    assert origin.hits["/stall"] == 1
