"""The imageId forms the seed page (Cornerstone's docs) writes, and how schemes are matched.

``wado-rs:``/``wado-uri:`` are aliases, whitespace after the colon is dropped by
every built-in scheme, schemes match without regard to case (RFC 3986 §3.1), and
an unknown scheme is answered with the registered ones and the closest of them.
Loads go to the real Orthanc and to local files and servers, and each result is
compared with the canonical form's.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from aiohttp import web
from PIL import Image as PILImage

from imageloader import AccessPolicy, ImageLoader
from imageloader.errors import AccessDeniedError, InvalidImageIdError, UnknownSchemeError
from imageloader.image import Image
from imageloader.registry import LoaderRegistry
from tests.nifti._volumes import nifti_bytes, write
from tests.servers import serve
from tests.support.orthanc import OrthancServer

CORPUS = Path(__file__).resolve().parents[1] / "data" / "cornerstone"
CT = CORPUS / "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm"


@pytest.fixture
async def loader() -> AsyncIterator[ImageLoader]:
    async with ImageLoader(max_web_workers=0) as loader:
        yield loader


def _png() -> bytes:
    out = io.BytesIO()
    PILImage.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def png_url() -> AsyncIterator[str]:
    body = _png()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="image/png")

    app = web.Application()
    app.router.add_get("/a.png", handler)
    async with serve(app) as server:
        yield str(server.make_url("/a.png"))


async def _all_equal(loader: ImageLoader, forms: list[str]) -> list[Image]:
    images = [await loader.load_image(form) for form in forms]
    for form, image in zip(forms, images, strict=True):
        assert image.image_id == form  # the caller's id, as written
        assert np.array_equal(image.pixel_data, images[0].pixel_data), form
    return images


async def test_the_seed_pages_wado_rs_and_wado_uri_forms_load_from_orthanc(
    loader: ImageLoader, orthanc: OrthancServer
) -> None:
    stored = orthanc.upload(CT)
    frame = (
        f"{orthanc.dicomweb_url}/studies/{stored.study_uid}/series/{stored.series_uid}"
        f"/instances/{stored.sop_uid}/frames/1"
    )
    wado = (
        f"{orthanc.wadouri_url}?requestType=WADO&studyUID={stored.study_uid}"
        f"&seriesUID={stored.series_uid}&objectUID={stored.sop_uid}"
        f"&contentType={quote('application/dicom', safe='')}"
    )
    disk = await loader.load_image(f"dicomfile:{CT}")
    images = await _all_equal(
        loader,
        [
            f"wadors:{frame}",
            f"wado-rs: {frame}",  # as the seed page writes it
            f"wado-rs:{frame}",
            f"WADO-RS:\t{frame}",
            f"WadoRS:{frame}",
            f"wadouri:{wado}",
            f"wado-uri: {wado}",
            f"Wado-URI:  {wado}",
        ],
    )
    assert np.array_equal(images[0].pixel_data, disk.pixel_data)


async def test_whitespace_after_the_colon_and_any_case_for_every_builtin_scheme(
    loader: ImageLoader, png_url: str, tmp_path: Path
) -> None:
    nifti = write(tmp_path / "v.nii", nifti_bytes(np.arange(27, dtype=np.int16).reshape(3, 3, 3)))
    cases = {
        "dicomfile": f"{CT}",
        "nifti": f"{nifti}?frame=1",
        "web": png_url,
    }
    for scheme, rest in cases.items():
        await _all_equal(
            loader,
            [f"{scheme}:{rest}", f"{scheme}: {rest}", f"{scheme.upper()}:\t {rest}"],
        )
    # http(s): the imageId is the URL itself; the scheme's case does not matter either.
    await _all_equal(loader, [png_url, "HTTP" + png_url[len("http") :], f"web: {png_url}"])


def test_custom_schemes_match_without_regard_to_case() -> None:
    registry = LoaderRegistry()

    async def mine(image_id: str, ctx: object) -> Image:
        raise AssertionError("not called")

    registry.register("MyScheme", mine)  # type: ignore[arg-type]
    assert registry.schemes == frozenset({"myscheme"})
    assert registry.resolve("myscheme:x") is mine
    assert registry.resolve("MYSCHEME: x") is mine
    assert registry.unregister("MYSCHEME") is mine
    registry.register("wado-rs", mine)  # type: ignore[arg-type]
    assert registry.schemes == frozenset({"wadors"})  # an alias names its scheme
    for bad in ("", "a:b", " x"):
        with pytest.raises(ValueError, match="invalid scheme"):
            registry.register(bad, mine)  # type: ignore[arg-type]


async def test_an_unknown_scheme_lists_the_registered_ones_and_suggests_the_closest(
    loader: ImageLoader,
) -> None:
    with pytest.raises(UnknownSchemeError) as info:
        await loader.load_image("wadrs:https://pacs/x")
    error = info.value
    assert error.suggestion == "wadors"
    assert "did you mean 'wadors'?" in str(error)
    for scheme in ("dicomfile", "wadors", "wado-rs", "wadouri", "wado-uri", "nifti", "web"):
        assert scheme in error.known
        assert scheme in str(error)
    assert error.image_id == "wadrs:https://pacs/x"

    with pytest.raises(UnknownSchemeError) as far:
        await loader.load_image("zzzzqq:x")
    assert far.value.suggestion is None and "did you mean" not in str(far.value)

    async def mine(image_id: str, ctx: object) -> Image:
        raise AssertionError("not called")

    loader.register_image_loader("thumbnails", mine)  # type: ignore[arg-type]
    with pytest.raises(UnknownSchemeError, match="did you mean 'thumbnails'"):
        await loader.load_image("thumbnail:x")


async def test_the_access_policy_matches_schemes_as_the_registry_does() -> None:
    policy = AccessPolicy(schemes={"WADO-RS", "DicomFile"}, roots=[CORPUS])
    assert policy.schemes == frozenset({"wadors", "dicomfile"})
    policy.check_scheme("wadors:https://pacs/x")
    policy.check_scheme("wado-rs: https://pacs/x")
    policy.check_scheme("DICOMFILE:/x")
    with pytest.raises(AccessDeniedError, match="scheme 'wadouri' is not allowed"):
        policy.check_scheme("wado-uri:https://pacs/x")
    # An id with no scheme is malformed, not refused.
    with pytest.raises(InvalidImageIdError, match="no scheme"):
        policy.check_scheme("/etc/passwd")
    async with ImageLoader(max_web_workers=0, access=policy) as loader:
        image = await loader.load_image(f"DicomFile: {CT}")
        assert image.rows == 512


def test_the_host_allow_list_names_the_port_when_the_port_differs() -> None:
    policy = AccessPolicy(hosts={"pacs.example.org:8042", "[::1]:8042", "other.org"})
    policy.check_url("http://pacs.example.org:8042/x")
    policy.check_url("http://[::1]:8042/x")
    policy.check_url("https://other.org:9999/x")  # a host alone allows every port
    with pytest.raises(AccessDeniedError, match=r"host 'pacs\.example\.org:9999' is not"):
        policy.check_url("http://pacs.example.org:9999/x")
    with pytest.raises(AccessDeniedError, match=r"host 'pacs\.example\.org:80' is not"):
        policy.check_url("http://pacs.example.org/x")
    with pytest.raises(AccessDeniedError, match=r"host '\[::1\]:9' is not"):
        policy.check_url("http://[::1]:9/x")
    with pytest.raises(AccessDeniedError, match=r"host 'evil\.org' is not"):
        policy.check_url("http://evil.org:8042/x")
    # The default port written out matches an entry that names it.
    AccessPolicy(hosts={"pacs.example.org:443"}).check_url("https://pacs.example.org/x")
