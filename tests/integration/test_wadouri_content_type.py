"""``wadouri:`` asks a WADO-URI server for ``application/dicom`` when the URL names no type.

WADO-URI's default ``contentType`` is a rendered image (``image/jpeg``; Orthanc 1.10
sends a PNG), which no Part 10 parser reads. A ``requestType=WADO`` URL without a
``contentType`` is sent with ``contentType=application/dicom`` (the imageId, the
cache key, is unchanged); one naming only another type is refused, saying so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest
from aiohttp import web

from imageloader import ImageLoader
from imageloader.dicom.wadouri import parse_wadouri_id
from imageloader.errors import InvalidImageIdError
from tests.integrations.servers import SAMPLES
from tests.servers import http_get, serve
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.timeout(120)

CT = SAMPLES / "CT_small.dcm"
RTDOSE = SAMPLES / "rtdose.dcm"  # 15 frames
WADO = "http://pacs:8042/wado?requestType=WADO&studyUID=1.2&seriesUID=1.2.3&objectUID=1.2.3.4"


def query_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


# -- the URL asked for -------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["wadouri", "dicomweb"])
def test_a_wado_request_without_content_type_asks_for_application_dicom(scheme: str) -> None:
    url, frame = parse_wadouri_id(f"{scheme}:{WADO}&frame=3")
    assert frame == 3
    assert query_of(url) == [*query_of(WADO), ("contentType", "application/dicom")]
    # An empty contentType names none either (Orthanc answers 400 for it).
    url, _ = parse_wadouri_id(f"{scheme}:{WADO}&contentType=&frame=2")
    assert query_of(url) == [*query_of(WADO), ("contentType", "application/dicom")]
    # What it gives back parses to itself.
    assert parse_wadouri_id(f"wadouri:{url}") == (url, 1)


def test_a_content_type_that_includes_application_dicom_is_kept() -> None:
    for asked in ("application/dicom", "APPLICATION/DICOM", "image/jpeg, application/dicom;q=0.5"):
        url, _ = parse_wadouri_id(f"wadouri:{WADO}&contentType={asked}")
        assert ("contentType", asked) in query_of(url)
        assert [k for k, _ in query_of(url)].count("contentType") == 1


def test_urls_that_are_not_wado_uri_requests_are_fetched_as_given() -> None:
    for url in (
        "http://orthanc:8042/instances/abc/file",
        "http://host/object?contentType=image/jpeg",  # no requestType=WADO: not ours to judge
        "http://host/wado?requestType=OTHER&objectUID=1",
    ):
        fetched, frame = parse_wadouri_id(f"wadouri:{url}{'&' if '?' in url else '?'}frame=2")
        assert frame == 2
        assert fetched.split("?")[0] == url.split("?")[0]
        assert query_of(fetched) == query_of(url)


@pytest.mark.parametrize("asked", ["image/jpeg", "image/png,image/gif", "*/*"])
def test_another_content_type_is_refused_naming_it(asked: str) -> None:
    image_id = f"wadouri:{WADO}&contentType={asked}&frame=1"
    with pytest.raises(InvalidImageIdError) as caught:
        parse_wadouri_id(image_id)
    assert caught.value.image_id == image_id
    message = caught.value.message
    assert f"the URL asks for contentType={asked}" in message
    assert "wadouri: needs application/dicom" in message


async def test_the_request_sent_asks_for_application_dicom_and_the_image_keeps_its_id() -> None:
    asked: list[dict[str, str]] = []
    body = CT.read_bytes()

    async def wado(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        if request.query.get("contentType") != "application/dicom":
            return web.Response(body=b"\x89PNG\r\n\x1a\n", content_type="image/png")
        return web.Response(body=body, content_type="application/dicom")

    app = web.Application()
    app.router.add_get("/wado", wado)
    async with serve(app) as server, ImageLoader(max_web_workers=0) as loader:
        image_id = (
            f"wadouri:{server.make_url('/wado')}?requestType=WADO&studyUID=1&seriesUID=2"
            "&objectUID=3"
        )
        image = await loader.load_and_cache_image(image_id)
        local = await loader.load_image(f"dicomfile:{CT}")
        assert image.image_id == image_id
        assert loader.cache.get_image(image_id) is image
        np.testing.assert_array_equal(image.pixel_data, local.pixel_data)
    assert asked == [
        {
            "requestType": "WADO",
            "studyUID": "1",
            "seriesUID": "2",
            "objectUID": "3",
            "contentType": "application/dicom",
        }
    ]


# -- a real Orthanc ----------------------------------------------------------------------
@pytest.fixture
async def loader() -> AsyncIterator[ImageLoader]:
    async with ImageLoader(max_web_workers=1) as il:
        yield il


def wado_url(orthanc: OrthancServer, path: object) -> str:
    stored = orthanc.upload(path)  # type: ignore[arg-type]
    return (
        f"{orthanc.wadouri_url}?requestType=WADO&studyUID={stored.study_uid}"
        f"&seriesUID={stored.series_uid}&objectUID={stored.sop_uid}"
    )


async def test_orthanc_without_content_type_loads_what_dicomfile_loads(
    orthanc: OrthancServer, loader: ImageLoader
) -> None:
    for path, frames in ((CT, 1), (RTDOSE, 15)):
        url = wado_url(orthanc, path)
        # The premise: asked without a contentType, Orthanc does not send the object:
        # it renders the CT (JPEG, or PNG), and cannot render the 32-bit dose (500).
        status, rendered = http_get(url)
        assert rendered[128:132] != b"DICM"
        if path == CT:
            assert status == 200 and rendered.startswith((b"\xff\xd8", b"\x89PNG"))
        else:
            assert status == 500
        for n in range(1, frames + 1):
            image_id = f"wadouri:{url}&frame={n}"
            image = await loader.load_and_cache_image(image_id)
            local = await loader.load_image(f"dicomfile:{path}?frame={n}")
            assert image.image_id == image_id and loader.cache.get_image(image_id) is image
            assert image.pixel_data.dtype == local.pixel_data.dtype
            np.testing.assert_array_equal(image.pixel_data, local.pixel_data)
            assert (image.slope, image.intercept) == (local.slope, local.intercept)
            assert (image.min_pixel_value, image.max_pixel_value) == (
                local.min_pixel_value,
                local.max_pixel_value,
            )


async def test_orthanc_with_another_content_type_is_refused_saying_why(
    orthanc: OrthancServer, loader: ImageLoader
) -> None:
    url = wado_url(orthanc, CT) + "&contentType=image/jpeg"
    status, rendered = http_get(url)
    assert status == 200 and rendered[128:132] != b"DICM"  # what would have come back
    with pytest.raises(InvalidImageIdError) as caught:
        await loader.load_image(f"wadouri:{url}")
    assert caught.value.image_id == f"wadouri:{url}"
    assert "the URL asks for contentType=image/jpeg" in caught.value.message
    assert "wadouri: needs application/dicom" in caught.value.message
    # With application/dicom named, the same URL loads.
    ok = await loader.load_image(f"wadouri:{url.replace('image/jpeg', 'application/dicom')}")
    assert ok.rows == 128
