"""DICOMweb helpers: series metadata for ``wadors:`` imageIds, and the imageIds of a series.

::

    ids = await imageloader.dicomweb.image_ids_for_series(loader, base, study, series)
    images = await loader.load_and_cache_images(ids)

:func:`add_series_metadata` fetches the series' DICOM JSON once (WADO-RS
``.../series/{se}/metadata``) and registers every frame's metadata modules, so
the frames load without asking for metadata one instance at a time.
:func:`image_ids_for_study` lists the study's series with QIDO-RS first.

A study or series with no instances is a :class:`~imageloader.errors.NotFoundError`
naming it (``"no instances found for study … at …"``) from :func:`image_ids_for_study`
and :func:`image_ids_for_series`: a server answers an empty list (or 204) rather than
404 for a study it does not hold (Orthanc's QIDO-RS does), and a prefetch of nothing,
local or on Dask, would otherwise report success.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from .dicom.dicomjson import load_json
from .dicom.instances import (
    DICOM_JSON,
    Parsed,
    frame_image_id,
    parse_instances,
    register_instance,
)
from .dicom.wadors import WadoRsOptions, wadors_options
from .errors import ImageLoaderError, NotFoundError, ResponseFormatError

if TYPE_CHECKING:
    from .loader import ImageLoader

__all__ = [
    "WadoRsOptions",
    "add_series_metadata",
    "image_ids_for_series",
    "image_ids_for_study",
    "wadors_options",
]

_SERIES_UID = "0020000E"
_SOP_UID = "00080018"
_INSTANCE_NUMBER = "00200013"


def _value(item: dict[str, Any], tag: str) -> Any:
    """The first value of ``tag`` in a DICOM JSON dataset; None when absent or malformed."""
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


#: A DICOM UID (PS3.5 9.1): digits in dot-separated components, at most 64 characters.
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def _uid(item: dict[str, Any], tag: str, url: str) -> str | None:
    """A UID from the server's JSON, to go into a URL: refused unless it is a DICOM UID.

    A hostile server could otherwise put ``/``, ``?`` or ``#`` into the URLs we build.
    """
    value = _text(item, tag)
    if value is not None and (len(value) > 64 or not _UID.fullmatch(value)):
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
        sop = _uid(item, _SOP_UID, url)
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
    series_uids = [_uid(item, _SERIES_UID, url) for item in listing if isinstance(item, dict)]
    results = await asyncio.gather(
        *(add_series_metadata(loader, base, study, uid) for uid in series_uids if uid)
    )
    image_ids = [image_id for ids in results for image_id in ids]
    if not image_ids:
        raise _no_instances(f"study {study}", base, url)
    return image_ids
