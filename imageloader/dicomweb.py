"""DICOMweb helpers: series metadata for ``wadors:`` imageIds, and the imageIds of a series.

::

    ids = await imageloader.dicomweb.image_ids_for_series(loader, base, study, series)
    images = await loader.load_and_cache_images(ids)

:func:`add_series_metadata` fetches the series' DICOM JSON once (WADO-RS
``.../series/{se}/metadata``) and registers every frame's metadata modules, so
the frames load without asking for metadata one instance at a time.
:func:`image_ids_for_study` lists the study's series with QIDO-RS first.

Search (QIDO-RS): :func:`search_studies`, :func:`search_series` and
:func:`search_instances` return the server's DICOM JSON objects, following its paging
to the end (see :func:`search_studies`); :func:`to_dataset` reads one as a pydicom
Dataset::

    studies = await dicomweb.search_studies(loader, base, PatientID="P12*",
                                            StudyDate="20240101-20241231")
    uid = studies[0]["0020000D"]["Value"][0]

A study or series with no instances is a :class:`~imageloader.errors.NotFoundError`
naming it (``"no instances found for study … at …"``) from :func:`image_ids_for_study`
and :func:`image_ids_for_series`: a server answers an empty list (or 204) rather than
404 for a study it does not hold (Orthanc's QIDO-RS does), and a prefetch of nothing,
local or on Dask, would otherwise report success.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from pydicom.dataset import Dataset

from .dicom.dicomjson import dataset_from_json, load_json
from .dicom.instances import (
    DICOM_JSON,
    Parsed,
    frame_image_id,
    parse_instances,
    register_instance,
)
from .dicom.qido import check_uid, is_uid, query_params
from .dicom.wadors import WadoRsOptions, wadors_options
from .errors import ImageLoaderError, ImageTooLargeError, NotFoundError, ResponseFormatError
from .http import redact_url

if TYPE_CHECKING:
    from .loader import ImageLoader

__all__ = [
    "WadoRsOptions",
    "add_series_metadata",
    "image_ids_for_series",
    "image_ids_for_study",
    "search_instances",
    "search_series",
    "search_studies",
    "series_uids",
    "to_dataset",
    "uid_of",
    "wadors_options",
]

_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SOP_UID = "00080018"
_INSTANCE_NUMBER = "00200013"


def _value(item: dict[str, Any], tag: str) -> Any:
    """The first value of ``tag`` in a DICOM JSON dataset; None when absent or malformed."""
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


def uid_of(item: dict[str, Any], tag: str, url: str) -> str | None:
    """A UID from the server's JSON, to go into a URL: refused unless it is a DICOM UID.

    A hostile server could otherwise put ``/``, ``?`` or ``#`` into the URLs we build.
    """
    value = _text(item, tag)
    if value is not None and not is_uid(value):
        raise ResponseFormatError(
            f"({tag[:4]},{tag[4:]}) is not a DICOM UID: {value[:80]!r}", url=url
        )
    return value


def _text(item: dict[str, Any], tag: str) -> str | None:
    """The first value of a UI element, when it is a non-empty string."""
    value = _value(item, tag)
    return (value.strip() or None) if isinstance(value, str) else None


def _sort_key(item: dict[str, Any]) -> tuple[int, str]:
    number = _value(item, _INSTANCE_NUMBER)
    try:
        order = int(number) if isinstance(number, (int, float, str)) else 1 << 31
    except (ValueError, OverflowError):
        order = 1 << 31
    return (order, _text(item, _SOP_UID) or "")


async def _get_json(loader: ImageLoader, url: str) -> Any:
    response = await loader.http.get(
        url, headers={"Accept": DICOM_JSON}, max_bytes=loader.limits.max_metadata_response_bytes
    )
    if response.status == 204 or not response.body:
        return []
    return await asyncio.to_thread(load_json, response.body, url=url)


async def add_series_metadata(loader: ImageLoader, base: str, study: str, series: str) -> list[str]:
    """Fetch the series' metadata once, register every frame's modules.

    Returns the wadors imageIds of every frame, in instance-number order.
    """
    base = base.rstrip("/")
    url = f"{base}/studies/{study}/series/{series}/metadata"
    items = await _get_json(loader, url)
    if not isinstance(items, list):
        raise ResponseFormatError("series metadata is not a list", url=url)
    listed = []
    for item in sorted((i for i in items if isinstance(i, dict)), key=_sort_key):
        sop = uid_of(item, _SOP_UID, url)
        if sop:
            listed.append((f"{base}/studies/{study}/series/{series}/instances/{sop}", item))
    image_ids: list[str] = []
    for instance_url, ds, frames in await _parse(loader, listed):
        image_ids += register_instance(loader, instance_url, ds, frames)
    return image_ids


async def _parse(loader: ImageLoader, listed: list[tuple[str, dict[str, Any]]]) -> list[Parsed]:
    """The instances parsed together; an error names the first frame of the failing one."""
    try:
        return await parse_instances(loader.http, listed)
    except ImageLoaderError as exc:
        if exc.image_id is not None:
            raise
    # Rare: parse them one at a time, to find the instance and name its imageId.
    parsed: list[Parsed] = []
    for url, item in listed:
        parsed += await parse_instances(loader.http, [(url, item)], frame_image_id(url, 1))
    return parsed


def _no_instances(what: str, base: str, url: str) -> NotFoundError:
    """``"no instances found for {what} at {base}"``; ``url`` is what answered empty."""
    error = NotFoundError(f"no instances found for {what} at {base}")
    error.url = url  # not in the message: it says where, the URL is for a program
    return error


async def image_ids_for_series(
    loader: ImageLoader, base: str, study: str, series: str
) -> list[str]:
    """The wadors imageIds of every frame of a series (its metadata is registered too).

    Raises :class:`~imageloader.errors.NotFoundError` if the series has no instances:
    the server's 404, or ours (``"no instances found for series … of study … at …"``)
    for an empty list.
    """
    ids = await add_series_metadata(loader, base, study, series)
    if not ids:
        base = base.rstrip("/")
        url = f"{base}/studies/{study}/series/{series}/metadata"
        raise _no_instances(f"series {series} of study {study}", base, url)
    return ids


async def image_ids_for_study(loader: ImageLoader, base: str, study: str) -> list[str]:
    """The wadors imageIds of every frame of every series of a study (QIDO-RS + metadata).

    Raises :class:`~imageloader.errors.NotFoundError` if the study has no instances:
    no series listed (Orthanc answers ``[]`` for a study it does not hold), or none
    with an instance.
    """
    base = base.rstrip("/")
    url = f"{base}/studies/{study}/series"
    listing = await _get_json(loader, url)
    if not isinstance(listing, list):
        raise ResponseFormatError("QIDO-RS series listing is not a list", url=url)
    series_uids = [uid_of(item, _SERIES_UID, url) for item in listing if isinstance(item, dict)]
    results = await asyncio.gather(
        *(add_series_metadata(loader, base, study, uid) for uid in series_uids if uid)
    )
    image_ids = [image_id for ids in results for image_id in ids]
    if not image_ids:
        raise _no_instances(f"study {study}", base, url)
    return image_ids


# --- Search (QIDO-RS) ---------------------------------------------------------------

#: Results asked for per request when searching (``limit`` of each QIDO-RS request).
DEFAULT_PAGE_SIZE = 1000
#: The most results a search returns before it raises ImageTooLargeError.
DEFAULT_MAX_RESULTS = 100_000


def series_uids(results: list[dict[str, Any]], url: str) -> list[tuple[str | None, str | None]]:
    """The (study, series) UIDs of series search results, each checked (:func:`uid_of`)."""
    return [
        (uid_of(item, _STUDY_UID, url), uid_of(item, _SERIES_UID, url))
        for item in results
        if isinstance(item, dict)
    ]


def to_dataset(obj: dict[str, Any]) -> Dataset:
    """One search result (a DICOM JSON object) as a pydicom Dataset.

    The reading is :func:`imageloader.dicom.dicomjson.dataset_from_json`'s, tolerant of
    servers' quirks; ``to_dataset(result).StudyInstanceUID`` and so on.
    """
    return dataset_from_json(obj)


def _positive(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


async def _search(
    loader: ImageLoader,
    url: str,
    filters: dict[str, Any],
    *,
    includefield: str | Iterable[str] | None,
    fuzzymatching: bool | None,
    limit: int | None,
    offset: int,
    page_size: int,
    max_results: int,
) -> list[dict[str, Any]]:
    """Every match of a QIDO-RS query at ``url``, one page after another.

    Each request asks for ``min(remaining, page_size)`` results at ``offset``; a page
    shorter than that is the last. A server that ignores ``limit`` (a page longer than
    asked) has answered everything at once: paging stops there.
    """
    params = query_params(filters, includefield=includefield, fuzzymatching=fuzzymatching)
    page_size = _positive("page_size", page_size, 1)
    max_results = _positive("max_results", max_results, 0)
    offset = _positive("offset", offset, 0)
    if limit is not None:
        limit = _positive("limit", limit, 0)
        if limit > max_results:
            raise ValueError(f"limit {limit} exceeds max_results {max_results}")
    # Without a limit, ask for one more than allowed, to tell "exactly max_results" from "more".
    wanted = limit if limit is not None else max_results + 1
    results: list[dict[str, Any]] = []
    while len(results) < wanted:
        asked = min(wanted - len(results), page_size)
        query = urlencode(
            [*params, ("limit", str(asked)), ("offset", str(offset + len(results)))],
            quote_via=quote,
            safe="*,",
        )
        page_url = f"{url}?{query}"
        page = await _get_json(loader, page_url)
        if not isinstance(page, list):
            raise ResponseFormatError("QIDO-RS answer is not a list", url=redact_url(page_url))
        if not all(isinstance(item, dict) for item in page):
            raise ResponseFormatError("QIDO-RS answer holds a non-object", url=redact_url(page_url))
        results += page
        if len(page) != asked:  # shorter: the end; longer: the server ignored limit
            break
    if limit is None and len(results) > max_results:
        raise ImageTooLargeError(
            f"QIDO-RS search matches more than max_results={max_results} objects "
            f"at {redact_url(url)}; narrow the query, or raise max_results"
        )
    return results[:wanted]


async def search_studies(
    loader: ImageLoader,
    base: str,
    *,
    includefield: str | Iterable[str] | None = None,
    fuzzymatching: bool | None = None,
    limit: int | None = None,
    offset: int = 0,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_results: int = DEFAULT_MAX_RESULTS,
    **filters: Any,
) -> list[dict[str, Any]]:
    """Studies matching ``filters`` (QIDO-RS ``{base}/studies``), as DICOM JSON objects.

    ``filters`` are DICOM keywords (or tags, ``**{"00100020": "P1"}``) with QIDO
    matching values, sent as given: ``PatientID="P12*"`` (wildcards ``*``, ``?``),
    ``StudyDate="20240101-20241231"`` (a range), ``ModalitiesInStudy="CT"``; a list of
    str is a UID list. An unknown keyword is a ``ValueError`` naming it, raised before
    any request (so are a bad ``includefield`` and bad numbers).

    ``includefield``: a keyword, a tag or ``"all"``, or a list of them;
    ``fuzzymatching``: the server's fuzzy matching of person names.

    Paging: the server's pages are followed to the end. Each request asks for
    ``limit=min(remaining, page_size)`` at the next ``offset``, and a page shorter than
    asked is the last, so ``page_size`` must not exceed the server's own cap on a page
    (servers cap silently; 1000 by default). ``limit``/``offset``: at most ``limit``
    results, from the ``offset``-th. Without ``limit``, a search matching more than
    ``max_results`` objects raises :class:`~imageloader.errors.ImageTooLargeError`
    (rather than return a silently truncated list); a ``limit`` above ``max_results`` is
    a ``ValueError``.

    The objects are the server's, as they come (``obj["0020000D"]["Value"][0]``;
    :func:`to_dataset` reads one into a pydicom Dataset). No match (``[]`` or 204) is
    ``[]``. An answer that is not JSON, not a list, or holds a non-object is a
    :class:`~imageloader.errors.ResponseFormatError`, and one over
    ``Limits.max_metadata_response_bytes`` an ImageTooLargeError, naming the URL. The
    requests go through ``loader.http`` (its auth, retries, limits and access policy).
    """
    return await _search(
        loader,
        f"{base.rstrip('/')}/studies",
        filters,
        includefield=includefield,
        fuzzymatching=fuzzymatching,
        limit=limit,
        offset=offset,
        page_size=page_size,
        max_results=max_results,
    )


async def search_series(
    loader: ImageLoader,
    base: str,
    study: str | None = None,
    *,
    includefield: str | Iterable[str] | None = None,
    fuzzymatching: bool | None = None,
    limit: int | None = None,
    offset: int = 0,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_results: int = DEFAULT_MAX_RESULTS,
    **filters: Any,
) -> list[dict[str, Any]]:
    """Series matching ``filters``: of ``study`` (``{base}/studies/{study}/series``) or of
    all studies (``{base}/series``). As :func:`search_studies` otherwise
    (``Modality="CT"``, ``SeriesNumber=2``, …); ``study`` must be a UID (ValueError).
    """
    base = base.rstrip("/")
    url = f"{base}/studies/{check_uid('study', study)}/series" if study else f"{base}/series"
    return await _search(
        loader,
        url,
        filters,
        includefield=includefield,
        fuzzymatching=fuzzymatching,
        limit=limit,
        offset=offset,
        page_size=page_size,
        max_results=max_results,
    )


async def search_instances(
    loader: ImageLoader,
    base: str,
    study: str | None = None,
    series: str | None = None,
    *,
    includefield: str | Iterable[str] | None = None,
    fuzzymatching: bool | None = None,
    limit: int | None = None,
    offset: int = 0,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_results: int = DEFAULT_MAX_RESULTS,
    **filters: Any,
) -> list[dict[str, Any]]:
    """Instances matching ``filters``: of ``series`` of ``study``, of ``study``, or of all.

    A ``series`` without ``study`` searches ``{base}/instances`` with
    ``SeriesInstanceUID={series}`` (QIDO-RS has no series-only path). As
    :func:`search_studies` otherwise; ``study``/``series`` must be UIDs (ValueError).
    """
    base = base.rstrip("/")
    if study:
        url = f"{base}/studies/{check_uid('study', study)}"
        url += f"/series/{check_uid('series', series)}/instances" if series else "/instances"
    else:
        url = f"{base}/instances"
        if series:
            filters = {"SeriesInstanceUID": check_uid("series", series), **filters}
    return await _search(
        loader,
        url,
        filters,
        includefield=includefield,
        fuzzymatching=fuzzymatching,
        limit=limit,
        offset=offset,
        page_size=page_size,
        max_results=max_results,
    )
