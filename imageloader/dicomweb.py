"""DICOMweb helpers: series metadata for ``wadors:`` imageIds, and the imageIds of a series.

::

    ids = await imageloader.dicomweb.image_ids_for_series(loader, base, study, series)
    images = await loader.load_and_cache_images(ids)

:func:`add_series_metadata` fetches the series' DICOM JSON once (WADO-RS
``.../series/{se}/metadata``) and registers every frame's metadata modules, so
the frames load without asking for metadata one instance at a time.
:func:`image_ids_for_study` lists the study's series with QIDO-RS first.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from .dicom.instances import DICOM_JSON, parse_instances, register_instance
from .dicom.wadors import WadoRsOptions, wadors_options
from .errors import ResponseFormatError

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
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def _sort_key(item: dict[str, Any]) -> tuple[int, str]:
    number = _value(item, _INSTANCE_NUMBER)
    try:
        order = int(number)
    except (TypeError, ValueError):
        order = 1 << 31
    return (order, str(_value(item, _SOP_UID) or ""))


async def _get_json(loader: ImageLoader, url: str) -> Any:
    response = await loader.http.get(url, headers={"Accept": DICOM_JSON})
    if response.status == 204 or not response.body:
        return []
    try:
        return json.loads(response.body)
    except ValueError as exc:
        raise ResponseFormatError(f"not DICOM JSON: {exc}", url=url) from exc


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
        sop = _value(item, _SOP_UID)
        if sop:
            listed.append((f"{base}/studies/{study}/series/{series}/instances/{sop}", item))
    image_ids: list[str] = []
    for instance_url, ds, frames in await parse_instances(loader.http, listed):
        image_ids += register_instance(loader, instance_url, ds, frames)
    return image_ids


async def image_ids_for_series(
    loader: ImageLoader, base: str, study: str, series: str
) -> list[str]:
    """The wadors imageIds of every frame of a series (its metadata is registered too)."""
    return await add_series_metadata(loader, base, study, series)


async def image_ids_for_study(loader: ImageLoader, base: str, study: str) -> list[str]:
    """The wadors imageIds of every frame of every series of a study (QIDO-RS + metadata)."""
    base = base.rstrip("/")
    listing = await _get_json(loader, f"{base}/studies/{study}/series")
    if not isinstance(listing, list):
        raise ResponseFormatError("QIDO-RS series listing is not a list", url=base)
    series_uids = [_value(item, _SERIES_UID) for item in listing if isinstance(item, dict)]
    results = await asyncio.gather(
        *(add_series_metadata(loader, base, study, uid) for uid in series_uids if uid)
    )
    return [image_id for ids in results for image_id in ids]
