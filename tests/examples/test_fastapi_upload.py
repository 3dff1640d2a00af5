"""The FastAPI example's uploads (``POST /files``, ``DELETE /files/{id}``), run as a user runs it.

``python examples/fastapi_app.py`` serves on a real uvicorn in its own process; every
check goes over HTTP. An uploaded file's PNG is compared with the PNG the same app
serves for the same file on disk (``dicomfile:<path>``), and what the app holds is
read from its ``/stats`` after every test, so "nothing leaks" is measured.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from tests.dicom._dicomdata import data_file
from tests.integrations.servers import SAMPLES
from tests.servers import served

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CORPUS = Path(__file__).resolve().parents[1] / "data" / "cornerstone"
CT = CORPUS / "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm"
MULTIFRAME = Path(data_file("emri_small.dcm"))  # 10 frames of 64 x 64
CT_SIZE = CT.stat().st_size


def _command(*extra: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        script = str(EXAMPLES / "fastapi_app.py")
        return [sys.executable, script, "--port", str(port), "--workers", "1", *extra]

    return command


def _client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=30, trust_env=False)


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    """The example app, allowed to read the corpus and pydicom-data files from disk too."""
    roots = ",".join(str(p) for p in (SAMPLES, CORPUS, MULTIFRAME.parent))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("IMAGELOADER_ROOTS", roots)
        with served(_command()) as (base, _process):
            yield base


@pytest.fixture
def client(app_url: str) -> Iterator[httpx.Client]:
    """A client of the app; after the test, the app must hold no uploaded file.

    Files a failed test left are deleted afterwards, so one failure does not fail the
    tests after it.
    """
    created: list[str] = []

    def remember(response: httpx.Response) -> None:
        if response.request.method == "POST" and response.status_code == 201:
            response.read()
            created.append(response.json()["image_id"])

    with _client(app_url) as client:
        client.event_hooks["response"] = [remember]
        yield client
        stats = client.get("/stats").json()
        for image_id in created:
            client.delete(_path("/files", image_id))
        assert (stats["files"], stats["files_bytes"]) == (0, 0), stats


def _path(route: str, image_id: str) -> str:
    return f"{route}/{quote(image_id, safe='')}"


def _png(client: httpx.Client, image_id: str, **params: int) -> bytes:
    response = client.get(_path("/images", image_id), params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return response.content


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(png)))


def _multipart(client: httpx.Client, data: bytes, name: str = "upload.dcm") -> httpx.Response:
    return client.post("/files", files={"file": (name, data, "application/dicom")})


def _raw(client: httpx.Client, data: bytes) -> httpx.Response:
    return client.post("/files", content=data, headers={"Content-Type": "application/dicom"})


def _error(response: httpx.Response, status: int, error: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body: dict[str, object] = response.json()
    assert body["error"] == error, body
    return body


def test_a_file_uploaded_either_way_serves_the_png_of_the_file_on_disk(
    client: httpx.Client,
) -> None:
    data = CT.read_bytes()
    by_form = _multipart(client, data, "ct.dcm")
    by_body = _raw(client, data)
    ids = []
    for response in (by_form, by_body):
        assert response.status_code == 201, response.text
        body = response.json()
        image_id = body["image_id"]
        assert image_id.startswith("dicomfile:") and image_id[len("dicomfile:") :].isdigit()
        assert body["frames"] == [f"{image_id}?frame=1"]
        assert body["number_of_frames"] == 1
        ids.append(image_id)
    assert ids[0] != ids[1]
    assert client.get("/stats").json()["files_bytes"] == 2 * CT_SIZE

    on_disk = f"dicomfile:{CT}"
    expected = _png(client, on_disk)
    assert _pixels(expected).shape == (512, 512)
    windowed = {"window_center": 40, "window_width": 400, "size": 128}
    for image_id in ids:
        assert _png(client, image_id) == expected
        assert _png(client, f"{image_id}?frame=1") == expected
        assert _png(client, image_id, **windowed) == _png(client, on_disk, **windowed)
    pixel_module = client.get(_path("/metadata/imagePixelModule", ids[0]))
    assert pixel_module.status_code == 200
    assert pixel_module.json() == client.get(_path("/metadata/imagePixelModule", on_disk)).json()

    for image_id in ids:
        assert client.delete(_path("/files", image_id)).status_code == 204
        gone = _error(client.get(_path("/images", image_id)), 404, "NotFoundError")
        assert gone["image_id"] == image_id
        again = _error(client.delete(_path("/files", image_id)), 404, "NotFoundError")
        assert again["image_id"] == image_id
    # The file on disk is still served: only the uploads went.
    assert _png(client, on_disk) == expected


def test_every_frame_of_a_multiframe_upload(client: httpx.Client) -> None:
    response = _raw(client, MULTIFRAME.read_bytes())
    assert response.status_code == 201, response.text
    body = response.json()
    image_id = body["image_id"]
    assert body["number_of_frames"] == 10
    assert body["frames"] == [f"{image_id}?frame={n}" for n in range(1, 11)]

    tenth = _png(client, body["frames"][9])
    assert tenth == _png(client, f"dicomfile:{MULTIFRAME}?frame=10")
    assert _pixels(tenth).shape == (64, 64)
    assert tenth != _png(client, body["frames"][0])  # a frame of its own, not the first
    multiframe = client.get(_path("/metadata/multiframeModule", body["frames"][2])).json()
    assert (multiframe["number_of_frames"], multiframe["frame_number"]) == (10, 3)

    past = _error(client.get(_path("/images", f"{image_id}?frame=11")), 404, "NotFoundError")
    assert "frame 11 of 10" in str(past["message"])
    assert past["image_id"] == f"{image_id}?frame=11"
    assert client.delete(_path("/files", image_id)).status_code == 204


def test_what_is_not_a_dicom_image_is_refused_and_not_kept(client: httpx.Client) -> None:
    junk = _error(_multipart(client, os.urandom(5000)), 422, "DecodeError")
    assert "not a DICOM Part 10 object" in str(junk["message"])
    assert str(junk["image_id"]).startswith("dicomfile:")
    assert client.get("/stats").json()["files"] == 0
    # Its id named the junk, now gone: nothing to serve or delete.
    assert client.get(_path("/images", str(junk["image_id"]))).status_code == 404
    assert client.delete(_path("/files", str(junk["image_id"]))).status_code == 404

    _error(_raw(client, b""), 422, "DecodeError")
    _error(_raw(client, CT.read_bytes()[:40_000]), 422, "DecodeError")  # cut short
    plan = _error(_raw(client, (SAMPLES / "rtplan.dcm").read_bytes()), 422, "MetadataError")
    assert "no pixel data" in str(plan["message"])

    # Not a file at all, or not where the form puts it.
    text = client.post("/files", content=b"hello", headers={"Content-Type": "text/plain"})
    _error(text, 415, "UnsupportedMediaType")
    no_file = client.post("/files", data={"name": "ct.dcm"}, files={"other": b"x"})
    _error(no_file, 422, "MissingFile")
    # A multipart upload without a Content-Length (chunked) is refused before it is read.
    boundary = "imageloader-test"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="ct.dcm"\r\n'
            f"Content-Type: application/dicom\r\n\r\n"
        ).encode()
        + CT.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    chunked = client.post(
        "/files",
        content=iter([form[:1000], form[1000:]]),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    _error(chunked, 411, "LengthRequired")
    # The same form with its length is taken: the refusals were about the requests.
    sized = client.post(
        "/files",
        content=form,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert sized.status_code == 201, sized.text
    assert _png(client, sized.json()["image_id"]) == _png(client, f"dicomfile:{CT}")
    assert client.delete(_path("/files", sized.json()["image_id"])).status_code == 204


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_uploads_as_the_readme_shows(client: httpx.Client, app_url: str) -> None:
    ids = []
    for args in (
        ["-F", f"file=@{CT}"],
        ["-H", "Content-Type: application/dicom", "--data-binary", f"@{CT}"],
    ):
        result = subprocess.run(
            ["curl", "-sS", "--noproxy", "*", "-w", "\n%{http_code}", *args, f"{app_url}/files"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        body, _, status = result.stdout.rpartition("\n")
        assert status == "201", result.stdout + result.stderr
        ids.append(httpx.Response(201, content=body.encode()).json()["image_id"])
    expected = _png(client, f"dicomfile:{CT}")
    for image_id in ids:
        assert _png(client, image_id) == expected
        assert client.delete(_path("/files", image_id)).status_code == 204


class _Endless:
    """A request body that goes on (up to 64 MiB); counts the bytes it gave."""

    def __init__(self) -> None:
        self.given = 0

    def __iter__(self) -> Iterator[bytes]:
        chunk = b"\0" * (64 << 10)
        while self.given < 64 << 20:
            self.given += len(chunk)
            yield chunk


def test_uploads_past_the_bound_are_refused_and_the_app_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bound = CT_SIZE + 50_000  # room for one CT, not two
    # The example's own access policy: uploads need only the scheme, not a root.
    for name in ("IMAGELOADER_SCHEMES", "IMAGELOADER_HOSTS", "IMAGELOADER_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    with served(_command("--max-files-bytes", str(bound))) as (base, _), _client(base) as client:
        outside = _error(client.get(_path("/images", f"dicomfile:{CT}")), 403, "AccessDeniedError")
        assert "outside the allowed roots" in str(outside["message"])
        first = _multipart(client, CT.read_bytes())
        assert first.status_code == 201, first.text
        first_id = first.json()["image_id"]
        expected = _png(client, first_id)
        assert _pixels(expected).shape == (512, 512)

        # Content-Length says it does not fit: refused before the body is read.
        raw = _error(_raw(client, CT.read_bytes()), 413, "ImageTooLargeError")
        assert f"an upload of {CT_SIZE} bytes is more than the 50000 bytes free" in str(
            raw["message"]
        )
        _error(_multipart(client, CT.read_bytes()), 413, "ImageTooLargeError")
        # A body with no length is refused once it passes the room, not read to its end.
        endless = _Endless()
        streamed = client.post(
            "/files", content=endless, headers={"Content-Type": "application/dicom"}
        )
        _error(streamed, 413, "ImageTooLargeError")
        assert endless.given < 32 << 20, endless.given
        # A form whose file alone is over the room (its envelope fits the allowance).
        _error(_multipart(client, os.urandom(60_000)), 413, "ImageTooLargeError")
        stats = client.get("/stats").json()
        assert (stats["files"], stats["files_bytes"]) == (1, CT_SIZE)

        # Still serving; room again once the first file is deleted.
        assert _png(client, first_id) == expected
        assert client.delete(_path("/files", first_id)).status_code == 204
        second = _raw(client, CT.read_bytes())
        assert second.status_code == 201, second.text
        assert _png(client, second.json()["image_id"]) == expected
        assert client.delete(_path("/files", second.json()["image_id"])).status_code == 204
        assert client.get("/stats").json()["files_bytes"] == 0
