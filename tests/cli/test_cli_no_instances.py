"""``imageloader prefetch`` of a study or series with no instances is an error (exit 2).

A DICOMweb server may answer an empty list (or 204) rather than 404 for a study it
does not hold: Orthanc's QIDO-RS does. That is "no instances found for study … at …"
(``NotFoundError`` from ``imageloader.dicomweb``), on stderr and in ``--report``,
the same with ``--dask-scheduler``, never "0 loaded" and exit 0. Orthanc cannot hold an
empty series: a local server answers ``[]`` for those cases.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from imageloader import ImageLoader
from imageloader.dicomweb import image_ids_for_series, image_ids_for_study
from imageloader.errors import NotFoundError
from tests.cli.test_cli_orthanc import run_cli
from tests.servers import free_port, serve
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.timeout(120)

STUDY = "1.2.826.0.1.3680043.8.498.404"  # held by no server here
SERIES = "1.2.826.0.1.3680043.8.498.405"


def assert_refused(result: tuple[int, str, str], report_file: Path | None, message: str) -> None:
    code, stdout, stderr = result
    assert code == 2, stdout + stderr
    assert stderr == f"imageloader prefetch: {message}\n"
    assert "loaded" not in stdout and "prefetching" not in stdout
    if report_file is not None:
        document = json.loads(report_file.read_text())
        assert document["exit_code"] == 2 and document["error"] == message
        assert document["images"] == [] and document["totals"]["images"] == 0


async def cli(*args: str) -> tuple[int, str, str]:
    result = await asyncio.to_thread(run_cli, *args)
    return result.returncode, result.stdout, result.stderr


# -- a real Orthanc ----------------------------------------------------------------------
async def test_a_study_orthanc_does_not_hold_exits_2(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    base = orthanc.dicomweb_url
    report = tmp_path / "report.json"
    result = await cli("prefetch", "--dicomweb", base, "--study", STUDY, "--report", str(report))
    assert_refused(result, report, f"no instances found for study {STUDY} at {base}")
    # A trailing slash on the root names the same root.
    result = await cli("prefetch", "--dicomweb", base + "/", "--study", STUDY)
    assert_refused(result, None, f"no instances found for study {STUDY} at {base}")


async def test_with_a_dask_scheduler_the_empty_study_is_found_before_the_cluster(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    base = orthanc.dicomweb_url
    nowhere = f"tcp://127.0.0.1:{free_port()}"  # never asked: the listing comes first
    report = tmp_path / "report.json"
    result = await cli(
        "prefetch", "--dicomweb", base, "--study", STUDY, "--dask-scheduler", nowhere,
        "--report", str(report),
    )  # fmt: skip
    code, stdout, stderr = result
    # The note about --output is printed before the listing; nothing else is.
    assert_refused((code, stdout.replace(_DASK_NOTE, ""), stderr), report,
                   f"no instances found for study {STUDY} at {base}")  # fmt: skip


_DASK_NOTE = "note: without --output, a Dask prefetch only checks that images load\n"


async def test_a_series_orthanc_does_not_hold_is_its_404(orthanc: OrthancServer) -> None:
    # Orthanc answers 404 for an unknown series' metadata: said as the server's error.
    code, _, stderr = await cli(
        "prefetch", "--dicomweb", orthanc.dicomweb_url, "--study", STUDY, "--series", SERIES
    )
    assert code == 2
    assert "cannot list imageIds: NotFoundError: not found (HTTP 404)" in stderr


async def test_the_library_raises_not_found_naming_the_study(orthanc: OrthancServer) -> None:
    base = orthanc.dicomweb_url
    async with ImageLoader(max_web_workers=0) as loader:
        with pytest.raises(NotFoundError) as caught:
            await image_ids_for_study(loader, base, STUDY)
    error = caught.value
    assert error.message == f"no instances found for study {STUDY} at {base}"
    assert error.url == f"{base}/studies/{STUDY}/series" and error.status is None
    assert str(error) == error.message and error.image_id is None


# -- a server that answers empty lists ---------------------------------------------------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def empty_list(request: web.Request) -> web.Response:
    return web.json_response([], content_type="application/dicom+json")


async def no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def one_series(request: web.Request) -> web.Response:
    listing = [{"0020000E": {"vr": "UI", "Value": [SERIES]}}]
    return web.json_response(listing, content_type="application/dicom+json")


@asynccontextmanager
async def dicomweb(series_listing: Handler, series_metadata: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/dicom-web/studies/{study}/series", series_listing)
    app.router.add_get("/dicom-web/studies/{study}/series/{series}/metadata", series_metadata)
    async with serve(app) as server:
        yield str(server.make_url("/dicom-web"))


@pytest.fixture
async def empty_server() -> AsyncIterator[str]:
    """A study listing one series, whose metadata is ``[]``."""
    async with dicomweb(one_series, empty_list) as base:
        yield base


async def test_an_empty_series_exits_2(empty_server: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    result = await cli(
        "prefetch", "--dicomweb", empty_server, "--study", STUDY, "--series", SERIES,
        "--report", str(report),
    )  # fmt: skip
    message = f"no instances found for series {SERIES} of study {STUDY} at {empty_server}"
    assert_refused(result, report, message)


async def test_a_study_whose_only_series_is_empty_exits_2(empty_server: str) -> None:
    result = await cli("prefetch", "--dicomweb", empty_server, "--study", STUDY)
    assert_refused(result, None, f"no instances found for study {STUDY} at {empty_server}")


@pytest.mark.parametrize("answer", [empty_list, no_content], ids=["[]", "204"])
async def test_an_empty_study_listing_exits_2(answer: Handler) -> None:
    async with dicomweb(answer, empty_list) as base:
        result = await cli("prefetch", "--dicomweb", base, "--study", STUDY)
        assert_refused(result, None, f"no instances found for study {STUDY} at {base}")


async def test_the_library_raises_not_found_naming_the_series(empty_server: str) -> None:
    async with ImageLoader(max_web_workers=0) as loader:
        with pytest.raises(NotFoundError) as caught:
            await image_ids_for_series(loader, empty_server, STUDY, SERIES)
    error = caught.value
    assert error.message == (
        f"no instances found for series {SERIES} of study {STUDY} at {empty_server}"
    )
    assert error.url == f"{empty_server}/studies/{STUDY}/series/{SERIES}/metadata"
