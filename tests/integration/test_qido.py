"""Search (QIDO-RS): filters, includefield and paging against the real Orthanc; the
short-page rule, max_results and bad answers against a local server."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pydicom
import pytest
from aiohttp import web
from pydicom.data import get_testdata_file

from imageloader import ImageLoader, dicomweb
from imageloader.errors import ImageTooLargeError, ResponseFormatError
from imageloader.limits import Limits
from tests.servers import serve
from tests.support.encoders import fresh_uids, quiet
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.timeout(120)

STUDY, SERIES, SOP = "0020000D", "0020000E", "00080018"


def uid(obj: dict[str, Any], tag: str) -> str:
    value: str = obj[tag]["Value"][0]
    return value


@pytest.fixture
async def loader() -> AsyncIterator[ImageLoader]:
    async with ImageLoader(max_web_workers=0) as il:
        yield il


@dataclass
class Uploaded:
    """Two studies of one fresh patient-id prefix: A (CT, 2024, two series of 3 + 1
    instances) and B (MR, 2023, one instance)."""

    prefix: str
    study_a: str = ""
    study_b: str = ""
    series_a1: str = ""
    series_a2: str = ""
    series_b: str = ""
    sops_a1: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def uploaded(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> Uploaded:
    tmp = tmp_path_factory.mktemp("qido")
    prefix = f"QIDO{secrets.token_hex(4).upper()}"
    info = Uploaded(prefix)

    def upload(name: str, key: str, study: str, series: str, **changes: object) -> str:
        with quiet():
            ds = pydicom.dcmread(get_testdata_file(name))
            fresh_uids(ds, f"{prefix}-{key}")
            if study:
                ds.StudyInstanceUID = study
            if series:
                ds.SeriesInstanceUID = series
            for keyword, value in changes.items():
                setattr(ds, keyword, value)
            path = tmp / f"{key}.dcm"
            ds.save_as(path)
        orthanc.upload(path)
        return f"{ds.StudyInstanceUID}|{ds.SeriesInstanceUID}|{ds.SOPInstanceUID}"

    a = {"PatientID": f"{prefix}-A", "StudyDate": "20240315", "StudyDescription": f"{prefix} A"}
    for number in (1, 2, 3):
        study, series, sop = upload(
            "CT_small.dcm",
            f"a1-{number}",
            info.study_a,
            info.series_a1,
            InstanceNumber=number,
            SeriesNumber=1,
            **a,
        ).split("|")
        info.study_a, info.series_a1 = study, series
        info.sops_a1.append(sop)
    info.series_a2 = upload(
        "CT_small.dcm", "a2", info.study_a, "", InstanceNumber=1, SeriesNumber=2, **a
    ).split("|")[1]
    b = {"PatientID": f"{prefix}-B", "StudyDate": "20230610", "StudyDescription": f"{prefix} B"}
    info.study_b, info.series_b, _ = upload("MR_small.dcm", "b", "", "", **b).split("|")
    return info


async def test_filters(orthanc: OrthancServer, uploaded: Uploaded, loader: ImageLoader) -> None:
    base, prefix = orthanc.dicomweb_url, uploaded.prefix
    both = await dicomweb.search_studies(loader, base, PatientID=f"{prefix}-*")
    assert sorted(uid(s, STUDY) for s in both) == sorted([uploaded.study_a, uploaded.study_b])
    one = await dicomweb.search_studies(loader, base, PatientID=f"{prefix}-?")
    assert len(one) == 2
    in_2024 = await dicomweb.search_studies(
        loader, base, PatientID=f"{prefix}*", StudyDate="20240101-20241231"
    )
    assert [uid(s, STUDY) for s in in_2024] == [uploaded.study_a]
    mr = await dicomweb.search_studies(loader, base, PatientID=f"{prefix}*", ModalitiesInStudy="MR")
    assert [uid(s, STUDY) for s in mr] == [uploaded.study_b]
    # A tag works as a keyword does.
    by_tag = await dicomweb.search_studies(loader, base, **{"00100020": f"{prefix}-B"})
    assert [uid(s, STUDY) for s in by_tag] == [uploaded.study_b]
    assert await dicomweb.search_studies(loader, base, PatientID=f"{prefix}-none") == []
    # The results read as datasets.
    ds = dicomweb.to_dataset(in_2024[0])
    assert ds.StudyInstanceUID == uploaded.study_a and ds.PatientID == f"{prefix}-A"


async def test_series_of_a_study(
    orthanc: OrthancServer, uploaded: Uploaded, loader: ImageLoader
) -> None:
    base = orthanc.dicomweb_url
    series = await dicomweb.search_series(loader, base, uploaded.study_a)
    assert sorted(uid(s, SERIES) for s in series) == sorted(
        [uploaded.series_a1, uploaded.series_a2]
    )
    ct = await dicomweb.search_series(loader, base, uploaded.study_a, Modality="CT", SeriesNumber=2)
    assert [uid(s, SERIES) for s in ct] == [uploaded.series_a2]
    assert await dicomweb.search_series(loader, base, uploaded.study_a, Modality="MR") == []
    mr = await dicomweb.search_series(
        loader, base, Modality="MR", StudyInstanceUID=uploaded.study_b
    )
    assert [uid(s, SERIES) for s in mr] == [uploaded.series_b]


async def test_instances_of_a_series(
    orthanc: OrthancServer, uploaded: Uploaded, loader: ImageLoader
) -> None:
    base = orthanc.dicomweb_url
    found = await dicomweb.search_instances(loader, base, uploaded.study_a, uploaded.series_a1)
    assert sorted(uid(i, SOP) for i in found) == sorted(uploaded.sops_a1)
    second = await dicomweb.search_instances(
        loader, base, uploaded.study_a, uploaded.series_a1, InstanceNumber=2
    )
    assert [uid(i, SOP) for i in second] == [uploaded.sops_a1[1]]
    of_study = await dicomweb.search_instances(loader, base, uploaded.study_a)
    assert len(of_study) == 4
    by_series = await dicomweb.search_instances(loader, base, series=uploaded.series_a1)
    assert sorted(uid(i, SOP) for i in by_series) == sorted(uploaded.sops_a1)


async def test_includefield(
    orthanc: OrthancServer, uploaded: Uploaded, loader: ImageLoader
) -> None:
    base, study = orthanc.dicomweb_url, uploaded.study_a
    description = "00081030"
    plain = await dicomweb.search_studies(loader, base, StudyInstanceUID=study)
    assert len(plain) == 1 and description not in plain[0]
    for include in ("StudyDescription", [description], ["StudyDescription", "00100010"]):
        found = await dicomweb.search_studies(
            loader, base, StudyInstanceUID=study, includefield=include
        )
        assert found[0][description]["Value"] == [f"{uploaded.prefix} A"], include


async def test_paging_follows_the_server_to_the_end(
    orthanc: OrthancServer, uploaded: Uploaded, loader: ImageLoader
) -> None:
    base, study = orthanc.dicomweb_url, uploaded.study_a
    whole = await dicomweb.search_instances(loader, base, study)
    assert len(whole) == 4
    before = loader.http.requests
    paged = await dicomweb.search_instances(loader, base, study, page_size=1)
    assert loader.http.requests - before == 5  # four pages of one, then an empty one
    assert sorted(uid(i, SOP) for i in paged) == sorted(uid(i, SOP) for i in whole)
    before = loader.http.requests
    paged = await dicomweb.search_instances(loader, base, study, page_size=3)
    assert loader.http.requests - before == 2  # 3, then 1: short, the end
    assert sorted(uid(i, SOP) for i in paged) == sorted(uid(i, SOP) for i in whole)
    # limit and offset over pages: every instance once.
    first = await dicomweb.search_instances(loader, base, study, limit=3, page_size=2)
    rest = await dicomweb.search_instances(loader, base, study, offset=3, page_size=2)
    assert len(first) == 3 and len(rest) == 1
    assert sorted(uid(i, SOP) for i in first + rest) == sorted(uid(i, SOP) for i in whole)
    with pytest.raises(ImageTooLargeError, match="max_results=3"):
        await dicomweb.search_instances(loader, base, study, max_results=3, page_size=2)
    assert len(await dicomweb.search_instances(loader, base, study, max_results=4)) == 4


async def test_bad_queries_fail_before_any_request(loader: ImageLoader) -> None:
    base = "http://127.0.0.1:9/dicom-web"  # nothing listens: a request would fail otherwise
    with pytest.raises(ValueError, match="'Modalty'"):
        await dicomweb.search_studies(loader, base, Modalty="CT")
    with pytest.raises(ValueError, match="'NotAKeyword'"):
        await dicomweb.search_series(loader, base, includefield=["Modality", "NotAKeyword"])
    with pytest.raises(ValueError, match="not a DICOM UID"):
        await dicomweb.search_instances(loader, base, "1.2/../3")
    with pytest.raises(ValueError, match="page_size"):
        await dicomweb.search_studies(loader, base, page_size=0)
    with pytest.raises(ValueError, match="exceeds max_results"):
        await dicomweb.search_studies(loader, base, limit=11, max_results=10)
    with pytest.raises(TypeError, match="PatientID"):
        await dicomweb.search_studies(loader, base, PatientID=None)
    assert loader.http.requests == 0
    assert await dicomweb.search_studies(loader, base, limit=0) == []
    assert loader.http.requests == 0


# --- a local server: canned pages -------------------------------------------------------


def _study(n: int) -> dict[str, Any]:
    return {STUDY: {"vr": "UI", "Value": [f"1.2.3.{n}"]}}


class Canned:
    """``total`` studies, at most ``cap`` a page (silently); records every query."""

    def __init__(self, total: int, cap: int, honour_limit: bool = True) -> None:
        self.total, self.cap, self.honour_limit = total, cap, honour_limit
        self.queries: list[dict[str, str]] = []
        self.answer: tuple[int, bytes, str] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        if self.answer is not None:
            status, body, content_type = self.answer
            return web.Response(status=status, body=body, content_type=content_type)
        offset = int(request.query.get("offset", 0))
        limit = int(request.query["limit"]) if self.honour_limit else self.total
        items = [_study(n) for n in range(self.total)][offset : offset + min(limit, self.cap)]
        return web.json_response(items, content_type="application/dicom+json")


@pytest.fixture
async def canned() -> AsyncIterator[tuple[Canned, str]]:
    state = Canned(total=5, cap=2)
    app = web.Application()
    app.router.add_get("/dicom-web/studies", state.handle)
    async with serve(app) as server:
        yield state, str(server.make_url("/dicom-web"))


async def test_pages_until_a_short_one(canned: tuple[Canned, str], loader: ImageLoader) -> None:
    state, base = canned
    found = await dicomweb.search_studies(loader, base, page_size=2, PatientID="AB*?")
    assert [uid(s, STUDY) for s in found] == [f"1.2.3.{n}" for n in range(5)]
    assert [(q["limit"], q["offset"]) for q in state.queries] == [
        ("2", "0"),
        ("2", "2"),
        ("2", "4"),
    ]
    assert all(q["PatientID"] == "AB*?" for q in state.queries)  # wildcards as given
    state.queries.clear()
    found = await dicomweb.search_studies(loader, base, page_size=2, limit=3, offset=1)
    assert [uid(s, STUDY) for s in found] == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    assert [(q["limit"], q["offset"]) for q in state.queries] == [("2", "1"), ("1", "3")]


async def test_max_results(canned: tuple[Canned, str], loader: ImageLoader) -> None:
    state, base = canned
    with pytest.raises(ImageTooLargeError, match="more than max_results=4") as caught:
        await dicomweb.search_studies(loader, base, page_size=2, max_results=4)
    assert base in str(caught.value)
    assert len(await dicomweb.search_studies(loader, base, page_size=2, max_results=5)) == 5
    state.honour_limit = False
    state.cap = 100
    state.queries.clear()
    # A server that ignores limit answers everything at once: no more pages asked for.
    assert len(await dicomweb.search_studies(loader, base, page_size=2)) == 5
    assert len(state.queries) == 1
    assert len(await dicomweb.search_studies(loader, base, page_size=2, limit=3)) == 3


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        ((200, b"<html><body>Login</body></html>", "text/html"), ResponseFormatError, "not DICOM"),
        ((200, json.dumps({"a": 1}).encode(), "application/json"), ResponseFormatError, "list"),
        (
            (200, json.dumps([_study(1), 2]).encode(), "application/json"),
            ResponseFormatError,
            "non-object",
        ),
        (
            (200, json.dumps([_study(1)] * 400).encode(), "application/json"),
            ImageTooLargeError,
            "exceeds the limit",
        ),
    ],
)
async def test_bad_answers_are_typed_errors_naming_the_url(
    canned: tuple[Canned, str],
    answer: tuple[int, bytes, str],
    error: type[Exception],
    message: str,
) -> None:
    state, base = canned
    state.answer = answer
    async with ImageLoader(
        max_web_workers=0, limits=Limits(max_metadata_response_bytes=10_000)
    ) as il:
        with pytest.raises(error, match=message) as caught:
            await dicomweb.search_studies(il, base, PatientID="X")
    assert f"{base}/studies?PatientID=X" in str(caught.value)


async def test_no_content_is_no_match(canned: tuple[Canned, str], loader: ImageLoader) -> None:
    state, base = canned
    state.answer = (204, b"", "application/dicom+json")
    assert await dicomweb.search_studies(loader, base) == []
    state.answer = (200, b"[]", "application/dicom+json")
    assert await dicomweb.search_studies(loader, base) == []
