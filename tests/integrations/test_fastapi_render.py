"""The FastAPI PNG route's rendering path, live on a real uvicorn: off the loop, cached, 304s.

Renders are counted by the app's :class:`RenderCache` (and by a recording renderer
put in its place), fetches at the origin (:class:`tests.integrations.servers.Origin`),
worker processes in ``/proc``, so "rendered once", "not fetched again", "rendered on
a render thread" and "workers started at startup" are observed where they happen.
Nothing here measures time.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pydicom
import pytest
from fastapi import FastAPI, Request
from PIL import Image as PILImage

from imageloader import AccessPolicy, ImageLoader
from imageloader.http import HttpOptions
from imageloader.image import Image
from imageloader.integrations.fastapi import (
    ENTRY_OVERHEAD_BYTES,
    IMMUTABLE_CACHE_CONTROL,
    RENDERS_STATE_KEY,
    REVALIDATE_CACHE_CONTROL,
    STATE_KEY,
    LoaderDep,
    RenderCache,
    add_error_handlers,
    content_is_immutable,
    covering_level,
    etag_matches,
    image_router,
    imageloader_lifespan,
    render_png,
)
from imageloader.levels import level_key
from tests.corpus import CORNERSTONE
from tests.integrations.servers import SAMPLES, Origin, UvicornThread, run_origin
from tests.processes import worker_children
from tests.support.orthanc import OrthancServer

CT = SAMPLES / "CT_small.dcm"
MR = SAMPLES / "MR_small.dcm"


def make_app(origin: Origin, root: Path = SAMPLES, **options: Any) -> FastAPI:
    """An app with the image routes, and routes that add, remove and purge for the tests."""
    access = AccessPolicy(
        schemes={"wadouri", "wadors", "dicomfile"}, hosts={origin.host, "127.0.0.1"}, roots=[root]
    )
    options.setdefault("max_web_workers", 0)
    app = FastAPI(
        lifespan=imageloader_lifespan(
            access=access, http=HttpOptions(retries=0, read_timeout=10), **options
        )
    )
    app.include_router(image_router())
    add_error_handlers(app)

    @app.post("/files")
    async def add_file(request: Request, loader: LoaderDep) -> str:
        return loader.files.add(await request.body())

    @app.delete("/files/{image_id:path}")
    async def remove_file(image_id: str, loader: LoaderDep) -> bool:
        return loader.files.remove(image_id)

    @app.post("/purge")
    async def purge(loader: LoaderDep) -> None:
        loader.cache.purge()

    return app


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    server = UvicornThread(app)
    await asyncio.to_thread(server.start)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=20, trust_env=False) as client:
            yield client
    finally:
        await asyncio.to_thread(server.stop)


def renders_of(app: FastAPI) -> RenderCache:
    renders = getattr(app.state, RENDERS_STATE_KEY)
    assert isinstance(renders, RenderCache)
    return renders


def loader_of(app: FastAPI) -> ImageLoader:
    loader = getattr(app.state, STATE_KEY)
    assert isinstance(loader, ImageLoader)
    return loader


def image_path(image_id: str) -> str:
    return f"/images/{quote(image_id, safe='')}"


def png_array(body: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(body)))


async def local_png(path: Path, **options: Any) -> np.ndarray:
    """What the route should send for a local file, rendered here (at the decode
    level that covers ``size``, as the route loads it)."""
    async with ImageLoader(max_web_workers=0) as loader:
        image_id = f"dicomfile:{path}"
        level = await covering_level(loader, image_id, options.get("size"))
        image = await loader.load_image(image_id, decode_level=level)
    return png_array(render_png(image, **options))


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    async with run_origin() as server:
        yield server


class Recorder:
    """A renderer that records where it ran, and can hold a render until released."""

    def __init__(self, *, hold: bool = False) -> None:
        self.calls: list[tuple[str, bool]] = []  # (thread name, whether a loop runs there)
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, image: Image, **options: Any) -> bytes:
        try:
            asyncio.get_running_loop()
            on_a_loop = True
        except RuntimeError:
            on_a_loop = False
        self.calls.append((threading.current_thread().name, on_a_loop))
        self.entered.set()
        if not self.release.wait(20):
            raise RuntimeError("never released")
        return render_png(image, **options)


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


# -- off the loop -------------------------------------------------------------------------


async def test_rendering_runs_on_a_render_thread_not_on_the_loop(origin: Origin) -> None:
    app = make_app(origin)
    recorder = Recorder()
    async with serve(app) as client:
        renders_of(app).renderer = recorder
        response = await client.get(image_path(f"dicomfile:{CT}"), params={"size": 64})
        assert response.status_code == 200
    [(thread, on_a_loop)] = recorder.calls
    assert thread.startswith("imageloader-render")
    assert not on_a_loop
    assert np.array_equal(png_array(response.content), await local_png(CT, size=64))


async def test_the_loop_serves_other_requests_while_a_render_is_held(origin: Origin) -> None:
    app = make_app(origin)
    recorder = Recorder(hold=True)
    async with serve(app) as client:
        renders_of(app).renderer = recorder
        held = asyncio.ensure_future(client.get(image_path(f"dicomfile:{CT}")))
        assert await asyncio.to_thread(recorder.entered.wait, 20)
        # The render is stuck on its thread; the loop still answers, loads included.
        assert (await client.get("/openapi.json")).status_code == 200
        meta = await client.get(f"/metadata/imagePixelModule/{quote(f'dicomfile:{MR}', safe='')}")
        assert meta.status_code == 200 and meta.json()["rows"] == 64
        assert not held.done()
        recorder.release.set()
        response = await held
    assert response.status_code == 200
    assert len(recorder.calls) == 1


# -- cached, shared -----------------------------------------------------------------------


async def test_a_cached_rendering_is_not_rendered_again(origin: Origin) -> None:
    app = make_app(origin)
    changeable = origin.wadouri("CT_small.dcm")  # no objectUID: may change
    fixed = origin.wadouri("CT_small.dcm", objectUID="1.2.3.4")  # immutable
    params = {"size": 100}
    async with serve(app) as client:
        renders, loader = renders_of(app), loader_of(app)
        first: dict[str, httpx.Response] = {}
        for image_id in (f"dicomfile:{CT}", changeable, fixed):
            before = renders.renders
            first[image_id] = await client.get(image_path(image_id), params=params)
            second = await client.get(image_path(image_id), params=params)
            assert first[image_id].status_code == second.status_code == 200
            assert second.content == first[image_id].content
            assert second.headers["etag"] == first[image_id].headers["etag"]
            assert renders.renders == before + 1, image_id
        assert renders.renders == 3
        # An immutable rendering is served without asking the loader at all...
        loader_hits, hits = loader.cache.hits, renders.hits
        assert (await client.get(image_path(fixed), params=params)).status_code == 200
        assert (renders.hits, loader.cache.hits) == (hits + 1, loader_hits)
        # ...even once the loader has dropped its image: no fetch, no render.
        assert (await client.post("/purge")).status_code == 200
        assert len(loader.cache) == 0
        again = await client.get(image_path(fixed), params=params)
        assert again.status_code == 200 and again.content == first[fixed].content
        assert renders.renders == 3
        assert origin.hits["/dicom/CT_small.dcm"] == 2  # changeable and fixed, once each
        # A changeable one went with its image: loaded and rendered again, same ETag.
        reloaded = await client.get(image_path(changeable), params=params)
        assert reloaded.status_code == 200 and renders.renders == 4
        assert origin.hits["/dicom/CT_small.dcm"] == 3
        assert reloaded.headers["etag"] == first[changeable].headers["etag"]
    expected = await local_png(CT, size=100)
    for response in first.values():
        assert np.array_equal(png_array(response.content), expected)


async def test_concurrent_requests_for_one_rendering_render_once(origin: Origin) -> None:
    app = make_app(origin)
    async with serve(app) as client:
        renders = renders_of(app)
        # Cold: the origin answers after 0.4 s, so all 16 wait on the same load...
        cold = origin.wadouri("CT_small.dcm", delay="0.4")
        responses = await asyncio.gather(*(client.get(image_path(cold)) for _ in range(16)))
        assert {r.status_code for r in responses} == {200}
        assert len({r.content for r in responses}) == 1
        assert origin.hits["/dicom/CT_small.dcm"] == 1
        assert renders.renders == 1  # ...and then on the same render.

        # Loaded, not yet rendered: the render is held until 11 more callers joined it.
        recorder = Recorder(hold=True)
        renders.renderer = recorder
        shared = renders.shared
        params = {"window_center": 40, "window_width": 400}
        held = [asyncio.ensure_future(client.get(image_path(cold), params=params))]
        assert await asyncio.to_thread(recorder.entered.wait, 20)
        held += [
            asyncio.ensure_future(client.get(image_path(cold), params=params)) for _ in range(11)
        ]
        await wait_until(lambda: renders.shared == shared + 11, "11 callers joined the render")
        recorder.release.set()
        responses = await asyncio.gather(*held)
        assert {r.status_code for r in responses} == {200}
        assert len({r.content for r in responses}) == 1
        assert len(recorder.calls) == 1 and renders.renders == 2
    assert np.array_equal(
        png_array(responses[0].content), await local_png(CT, window_center=40, window_width=400)
    )


# -- ETag, 304, Cache-Control ---------------------------------------------------------------


async def test_if_none_match_is_answered_304_without_a_body(origin: Origin) -> None:
    app = make_app(origin)
    async with serve(app) as client:
        for image_id in (f"dicomfile:{CT}", origin.wadouri("CT_small.dcm", objectUID="1.2.3")):
            url = image_path(image_id)
            response = await client.get(url)
            etag = response.headers["etag"]
            assert response.status_code == 200 and etag.startswith('"') and etag.endswith('"')
            renders = renders_of(app).renders
            for header in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
                answer = await client.get(url, headers={"If-None-Match": header})
                assert answer.status_code == 304, header
                assert answer.content == b""
                assert answer.headers["etag"] == etag
                assert answer.headers["cache-control"] == response.headers["cache-control"]
            for header in ('"nope"', etag[:-2] + '"'):
                answer = await client.get(url, headers={"If-None-Match": header})
                assert answer.status_code == 200 and answer.content == response.content
            assert renders_of(app).renders == renders  # answered from the cache


async def test_the_etag_changes_with_window_and_size(origin: Origin) -> None:
    app = make_app(origin)
    variants: list[dict[str, Any]] = [
        {},
        {"size": 64},
        {"size": 65},
        {"window_center": 40, "window_width": 400},
        {"window_center": 41, "window_width": 400},
        {"window_center": 40, "window_width": 401},
        {"window_center": 40, "window_width": 400, "size": 64},
    ]
    async with serve(app) as client:
        url = image_path(f"dicomfile:{CT}")
        etags = [(await client.get(url, params=params)).headers["etag"] for params in variants]
        same = [(await client.get(url, params=params)).headers["etag"] for params in variants]
        # The same query twice, spelled differently: the same rendering.
        spelled = await client.get(url, params={"window_center": "40.0", "window_width": "4e2"})
        # Another image with the same parameters: another ETag.
        other = await client.get(image_path(f"dicomfile:{MR}"), params={"size": 64})
        # A window that is not a number is refused, not rendered (nor cached: NaN != NaN).
        renders = renders_of(app).renders
        for bad in ({"window_center": "nan"}, {"window_width": "inf"}):
            assert (await client.get(url, params=bad)).status_code == 422
        assert renders_of(app).renders == renders
    assert len(set(etags)) == len(variants)
    assert same == etags
    assert spelled.headers["etag"] == etags[3]
    assert other.headers["etag"] not in etags


async def test_cache_control_by_scheme_and_a_removed_file_is_not_served(origin: Origin) -> None:
    app = make_app(origin)
    async with serve(app) as client:
        answers = {
            name: await client.get(image_path(image_id))
            for name, image_id in {
                "wadouri with objectUID": origin.wadouri("CT_small.dcm", objectUID="1.2.3"),
                "wadouri without": origin.wadouri("CT_small.dcm"),
                "dicomfile path": f"dicomfile:{CT}",
            }.items()
        }
        uploaded = (await client.post("/files", content=CT.read_bytes())).json()
        assert uploaded.startswith("dicomfile:")
        answers["dicomfile in memory"] = await client.get(image_path(uploaded))
        assert {name: a.headers["cache-control"] for name, a in answers.items()} == {
            "wadouri with objectUID": IMMUTABLE_CACHE_CONTROL,
            "wadouri without": REVALIDATE_CACHE_CONTROL,
            "dicomfile path": REVALIDATE_CACHE_CONTROL,
            "dicomfile in memory": REVALIDATE_CACHE_CONTROL,
        }
        assert {a.status_code for a in answers.values()} == {200}
        # Removing the file drops its rendering with its image: never served stale.
        entries = len(renders_of(app))
        assert (await client.delete(f"/files/{quote(uploaded, safe='')}")).json() is True
        assert len(renders_of(app)) == entries - 1
        gone = await client.get(image_path(uploaded))
        assert gone.status_code == 404 and gone.json()["error"] == "NotFoundError"
        etag = answers["dicomfile in memory"].headers["etag"]
        revalidated = await client.get(image_path(uploaded), headers={"If-None-Match": etag})
        assert revalidated.status_code == 404


async def test_a_changed_file_is_rendered_anew_once_the_loader_drops_it(
    origin: Origin, tmp_path: Path
) -> None:
    path, changed = tmp_path / "image.dcm", tmp_path / "changed.dcm"
    shutil.copyfile(CT, path)
    ds = pydicom.dcmread(CT)
    ds.PixelData = ds.pixel_array[::-1].tobytes()  # the same image upside down
    ds.save_as(changed)
    app = make_app(origin, root=tmp_path)
    async with serve(app) as client:
        url = image_path(f"dicomfile:{path}")
        before = await client.get(url)
        shutil.copyfile(changed, path)
        # The loader still holds the image it read, so the rendering still stands...
        assert (await client.get(url)).content == before.content
        # ...until the loader drops it: then the new content, with a new ETag.
        assert (await client.post("/purge")).status_code == 200
        after = await client.get(url)
        stale = await client.get(url, headers={"If-None-Match": before.headers["etag"]})
    assert before.status_code == after.status_code == stale.status_code == 200, after.text
    assert after.headers["etag"] != before.headers["etag"]
    assert np.array_equal(png_array(after.content), await local_png(changed))
    assert np.array_equal(png_array(after.content), png_array(before.content)[::-1])
    assert stale.content == after.content


async def test_the_byte_bound_evicts_the_least_recently_used(origin: Origin) -> None:
    app = make_app(origin)
    image_id = f"dicomfile:{CT}"
    a, b, c = ({"size": 32}, {"size": 48}, {"size": 64})
    async with serve(app) as client:
        renders = renders_of(app)
        url = image_path(image_id)
        sizes = [
            len((await client.get(url, params=params)).content)
            + len(image_id)
            + ENTRY_OVERHEAD_BYTES
            for params in (a, b, c)
        ]
        assert renders.size_bytes == sum(sizes) and len(renders) == 3
        # Room for any two of the three, not for all three.
        renders.clear()
        renders.max_bytes = sum(sizes) - 1
        start = renders.renders

        async def get(params: dict[str, int]) -> int:
            """Renders this request made (0: served from the cache)."""
            before = renders.renders
            assert (await client.get(url, params=params)).status_code == 200
            assert renders.size_bytes <= renders.max_bytes
            return renders.renders - before

        assert [await get(a), await get(b), await get(a)] == [1, 1, 0]
        assert await get(c) == 1  # evicts b, the least recently used (a was used since)
        assert renders.evictions == 1 and len(renders) == 2
        assert [await get(a), await get(c)] == [0, 0]
        assert await get(b) == 1
        assert renders.renders == start + 4
        # A rendering larger than the whole bound is served, not cached.
        renders.max_bytes = sizes[0] - 1
        renders.clear()
        assert await get(a) == 1 and await get(a) == 1
        assert len(renders) == 0


# -- warming ----------------------------------------------------------------------------------


@pytest.mark.parametrize("warm", [True, False])
async def test_warming_starts_the_decode_workers_at_startup(origin: Origin, warm: bool) -> None:
    before = set(worker_children())
    app = make_app(origin, max_web_workers=1, warm=warm)
    async with serve(app):
        # Right after startup, before any request:
        pids = loader_of(app).decode_pool.pids()
        started = set(worker_children()) - before
        if warm:
            assert len(pids) == 1 and set(pids) <= started
            assert "multiprocessing" in worker_children()[pids[0]]
        else:
            assert pids == [] and not started
    assert set(worker_children()) <= before


# -- on a real PACS -----------------------------------------------------------------------


async def test_wadors_frames_are_immutable_on_orthanc(orthanc: OrthancServer) -> None:
    stored = await asyncio.to_thread(orthanc.upload, CT)
    image_id = (
        f"wadors:{orthanc.dicomweb_url}/studies/{stored.study_uid}/series/{stored.series_uid}"
        f"/instances/{stored.sop_uid}/frames/1"
    )
    async with run_origin() as origin:
        app = make_app(origin)
        async with serve(app) as client:
            first = await client.get(image_path(image_id), params={"size": 64})
            assert first.status_code == 200, first.text
            assert first.headers["cache-control"] == IMMUTABLE_CACHE_CONTROL
            assert (await client.post("/purge")).status_code == 200
            requests = loader_of(app).http.requests
            again = await client.get(image_path(image_id), params={"size": 64})
            assert again.content == first.content
            assert loader_of(app).http.requests == requests  # nothing fetched
            assert renders_of(app).renders == 1
            assert image_id not in loader_of(app).cache  # nor loaded
    assert np.array_equal(png_array(first.content), await local_png(CT, size=64))


# -- the rules, as functions ----------------------------------------------------------------

BASE = "https://pacs.example.org/dicom-web"


@pytest.mark.parametrize(
    ("image_id", "immutable"),
    [
        (f"wadors:{BASE}/studies/1.2/series/1.3/instances/1.4/frames/1", True),
        (f"WADO-RS: {BASE}/studies/1.2/series/1.3/instances/1.4/frames/12", True),
        (f"wadors:{BASE}/studies/1.2/series/1.3/instances/1.4", False),
        (f"wadors:{BASE}/studies/1.2/series/1.3/instances/1.4/rendered", False),
        ("wadouri:http://h/wado?requestType=WADO&studyUID=1&seriesUID=2&objectUID=3", True),
        ("dicomweb:http://h/wado?requestType=WADO&studyUID=1&seriesUID=2&objectUID=3", True),
        ("wadouri:http://h/wado?objectUID=3&frame=2", True),
        ("wadouri:http://h/wado?objectUID=&frame=2", False),
        ("wadouri:http://h/instances/abc/file", False),
        ("dicomfile:/data/ct.dcm", False),
        ("dicomfile:0", False),
        ("dicomfile:0?frame=1", False),
        ("https://h/image.png", False),
        ("web:https://h/image.png", False),
        ("nifti:https://h/brain.nii.gz?frame=3", False),
        ("", False),
        ("no-scheme", False),
        ("wadouri:http://[::1/x?objectUID=3", False),  # malformed: not immutable, no error
    ],
)
def test_content_is_immutable(image_id: str, immutable: bool) -> None:
    assert content_is_immutable(image_id) is immutable


def test_etag_matches() -> None:
    assert etag_matches('"abc"', '"abc"')
    assert etag_matches('W/"abc"', '"abc"')
    assert etag_matches(' "x" ,W/"abc"', '"abc"')
    assert etag_matches("*", '"abc"')
    assert not etag_matches('"abcd"', '"abc"')
    assert not etag_matches("abc", '"abc"')
    assert not etag_matches("", '"abc"')


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16"])
@pytest.mark.parametrize("stored", [False, True])
def test_windowing_by_table_gives_the_arithmetic_bytes(dtype: str, stored: bool) -> None:
    """The 8/16-bit table path of ``render_png`` equals Cornerstone's arithmetic per pixel."""
    from imageloader.image import PreScale
    from imageloader.render import _compressors, _window, encode_png, to_display

    info = np.iinfo(dtype)
    rng = np.random.default_rng(7)
    pixels = rng.integers(info.min, info.max, (300, 301), dtype=dtype, endpoint=True)
    fields: dict[str, Any] = {"invert": dtype.startswith("u")}
    if stored:  # stored values: the window is in modality units
        fields.update(slope=0.5, intercept=-100.0, prescale=PreScale(scaled=False))
    image = Image.from_array("test:1", pixels, **fields)
    for center, width in [(None, None), (40.0, 400.0), (-3.0, 1.0), (1e4, 7.0)]:
        shown = to_display(image, window_center=center, window_width=width)
        expected = _window(
            pixels,
            image,
            image.window_center if center is None else center,
            max(image.window_width if width is None else width, 1.0),
        )
        assert shown.dtype == np.uint8 and np.array_equal(shown, expected)
        for compressor in _compressors():  # zlib, and libdeflate where installed
            assert np.array_equal(png_array(encode_png(shown, compressor=compressor)), expected)
    assert np.array_equal(
        png_array(render_png(image, size=100)), to_display(image)[::3, ::3][:100, :100]
    )


J2K_CT = CORNERSTONE / "CTImage.dcm_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm"


async def test_size_decodes_at_the_level_that_covers_it(origin: Origin) -> None:
    pytest.importorskip("glymur")
    app = make_app(origin, root=CORNERSTONE)
    image_id = f"dicomfile:{J2K_CT}"
    async with serve(app) as client:
        small = await client.get(image_path(image_id), params={"size": 128})
        assert small.status_code == 200
        loader = loader_of(app)
        # 512² asked for at 128: decoded at level 2 (128²), not in full and shrunk.
        cached = loader.cache.get_image(level_key(image_id, 2))
        assert cached is not None and cached.rows == 128 and image_id not in loader.cache
        assert png_array(small.content).shape == (128, 128)
        # 100 is covered by level 2 too (128 >= 100; level 3's 64 is not): fitted after.
        hundred = await client.get(image_path(image_id), params={"size": 100})
        assert png_array(hundred.content).shape == (100, 100)
        assert len(loader.cache) == 1
        # 300 needs level 0 (256 < 300).
        await client.get(image_path(image_id), params={"size": 300})
        assert image_id in loader.cache
        levels = [await covering_level(loader, image_id, n) for n in (None, 512, 256, 255, 16, 1)]
        assert levels == [0, 0, 1, 1, 5, 5]


async def test_a_thumbnail_router_defaults_to_its_size(origin: Origin) -> None:
    access = AccessPolicy(schemes={"dicomfile"}, roots=[CORNERSTONE])
    app = FastAPI(lifespan=imageloader_lifespan(access=access, max_web_workers=0))
    app.include_router(image_router(request_type="thumbnail", thumbnail_size=64), prefix="/thumbs")
    add_error_handlers(app)
    jpeg_ls = CORNERSTONE / "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm"
    image_id = f"dicomfile:{jpeg_ls}"
    async with serve(app) as client:
        response = await client.get("/thumbs" + image_path(image_id))
        assert response.status_code == 200, response.text
        assert png_array(response.content).shape == (64, 64)
        assert loader_of(app).cache.get_image(level_key(image_id, 3)) is not None
        # An explicit size still wins.
        bigger = await client.get("/thumbs" + image_path(image_id), params={"size": 200})
        assert png_array(bigger.content).shape == (200, 200)


async def test_decode_levels_can_be_turned_off(origin: Origin) -> None:
    access = AccessPolicy(schemes={"dicomfile"}, roots=[CORNERSTONE])
    app = FastAPI(lifespan=imageloader_lifespan(access=access, max_web_workers=0))
    app.include_router(image_router(decode_levels=False))
    image_id = f"dicomfile:{CORNERSTONE / 'CTImage.dcm'}"
    async with serve(app) as client:
        response = await client.get(image_path(image_id), params={"size": 64})
        assert png_array(response.content).shape == (64, 64)
        assert image_id in loader_of(app).cache  # decoded in full, then fitted
        assert level_key(image_id, 3) not in loader_of(app).cache
