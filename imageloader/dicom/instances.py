"""What ``wadors:`` knows about instances: their datasets (from DICOM JSON) and modules.

Instance metadata is fetched once per instance (however many of its frames load at
once) when nobody registered it, and every frame's modules are registered: they
carry all a decode needs (palette LUTs, PET and RTDOSE scaling included), so no
dataset is kept. A frame whose modules have left the metadata store has its
instance's metadata fetched again. The number of frames of each instance fetched
is remembered (a few thousand instances, oldest out), so a frame past the end is a
NotFoundError without asking the server again.

:func:`fetch_part10` fetches an instance itself (Part 10, as stored): for the
attributes its DICOM JSON lacks, and for ``wadors:`` frames a server refuses to send.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom import Dataset

from ..errors import ResponseFormatError
from ..inflight import Flight
from .dicomjson import BulkDataHandler, bulkdata_references, dataset_from_json, load_json
from .modules import metadata_modules_by_frame
from .multipart import is_multipart, parse_multipart_related
from .part10 import parse_part10

if TYPE_CHECKING:
    from ..context import LoadContext, LoaderServices
    from ..http import HttpClient

__all__ = [
    "InstanceFetcher",
    "WadoRsRef",
    "fetch_bulkdata",
    "fetch_part10",
    "instance_modules",
    "register_instance",
]

DICOM_JSON = "application/dicom+json"
_BULK_ACCEPT = 'multipart/related; type="application/octet-stream", application/octet-stream'
PART10_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
# A body that is not multipart must be the instance itself, not a login page.
_PART10_MEDIA_TYPES = frozenset({"", "application/dicom", "application/octet-stream"})
# Instances whose number of frames is remembered (an int and a URL each).
_FRAME_COUNT_MEMORY = 4096


@dataclass(frozen=True, slots=True)
class WadoRsRef:
    """The parts of a wadors imageId (:func:`~imageloader.dicom.wadors.parse_wadors_id`)."""

    base: str
    study: str
    series: str
    instance: str
    frame: int

    @property
    def instance_url(self) -> str:
        """``{base}/studies/{st}/series/{se}/instances/{in}``."""
        return f"{self.base}/studies/{self.study}/series/{self.series}/instances/{self.instance}"


# Palette LUT data (normal and segmented): servers send these as BulkDataURIs, and
# PALETTE COLOR frames cannot be decoded without them. Other bulk data is not needed.
_PALETTE_TAGS = frozenset({"00281201", "00281202", "00281203", "00281221", "00281222", "00281223"})


async def fetch_bulkdata(
    http: HttpClient, items: Iterable[Mapping[str, Any]], image_id: str | None = None
) -> BulkDataHandler:
    """Fetch the palette BulkDataURIs of DICOM JSON datasets; a handler that serves them."""
    uris = {
        uri
        for item in items
        for tag, _, uri in bulkdata_references(item)
        if tag in _PALETTE_TAGS and uri.startswith(("http://", "https://"))
    }

    async def one(uri: str) -> tuple[str, bytes]:
        response = await http.get(
            uri, image_id=image_id, headers={"Accept": _BULK_ACCEPT, "Accept-Encoding": "identity"}
        )
        if is_multipart(response.content_type):
            parts = parse_multipart_related(
                response.body, response.content_type, image_id=image_id, url=uri, max_parts=1
            )
            if len(parts) != 1:
                raise ResponseFormatError(
                    f"bulk data response has {len(parts)} parts", image_id=image_id, url=uri
                )
            return uri, bytes(parts[0].data)
        return uri, response.body

    fetched = dict(await asyncio.gather(*(one(uri) for uri in sorted(uris))))
    return lambda tag, vr, uri: fetched.get(uri)


Parsed = tuple[str, Dataset, list[tuple[str, dict[str, Any]]]]


async def parse_instances(
    http: HttpClient, items: Sequence[tuple[str, Mapping[str, Any]]], image_id: str | None = None
) -> list[Parsed]:
    """DICOM JSON of instances → ``(instance_url, dataset, frame modules)`` each.

    Palette LUT data given as BulkDataURIs is fetched. A PALETTE COLOR instance
    whose JSON lacks the LUT descriptors (Orthanc drops them for some implicit VR
    files) gets its attributes from the instance itself (WADO-RS, Part 10 header).
    """
    handler = await fetch_bulkdata(http, (item for _, item in items), image_id)

    def parse() -> list[Parsed]:
        out = []
        for url, item in items:
            ds = dataset_from_json(item, bulkdata_handler=handler, image_id=image_id)
            frames = [] if _lacks_palette(ds) else instance_modules(url, ds, image_id)
            out.append((url, ds, frames))
        return out

    parsed = await asyncio.to_thread(parse)
    for index, (url, ds, frames) in enumerate(parsed):
        if not frames:
            ds = await _part10_header(http, url, image_id)
            frames = await asyncio.to_thread(instance_modules, url, ds, image_id)
            parsed[index] = (url, ds, frames)
    return parsed


def _lacks_palette(ds: Dataset) -> bool:
    return ds.get("PhotometricInterpretation") == "PALETTE COLOR" and (
        "RedPaletteColorLookupTableDescriptor" not in ds
    )


async def fetch_part10(
    http: HttpClient, instance_url: str, image_id: str | None = None
) -> memoryview:
    """The instance at ``instance_url`` as a Part 10 object, as stored (one request).

    Asked for as ``multipart/related; type="application/dicom"; transfer-syntax=*``;
    a single-part ``application/dicom`` body is accepted too. The bytes are a
    view into the response body (no copy). Raises ResponseFormatError for a body that
    is neither, or holds other than one part, and the HTTP client's typed errors.
    """
    response = await http.get(instance_url, image_id=image_id, headers={"Accept": PART10_ACCEPT})
    content_type = response.content_type
    if not is_multipart(content_type):
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in _PART10_MEDIA_TYPES:
            raise ResponseFormatError(
                f"expected a DICOM instance, got Content-Type {content_type!r}",
                image_id=image_id,
                url=instance_url,
            )
        return memoryview(response.body)
    parts = parse_multipart_related(
        response.body, content_type, image_id=image_id, url=instance_url, max_parts=1
    )
    if len(parts) != 1:
        raise ResponseFormatError(
            f"asked for one instance, got {len(parts)} parts", image_id=image_id, url=instance_url
        )
    return parts[0].data


async def _part10_header(http: HttpClient, instance_url: str, image_id: str | None) -> Dataset:
    data = await fetch_part10(http, instance_url, image_id)

    def read() -> Dataset:
        return parse_part10(data, image_id=image_id).dataset

    return await asyncio.to_thread(read)


def frame_image_id(instance_url: str, frame: int) -> str:
    """The wadors imageId of one frame of an instance."""
    return f"wadors:{instance_url}/frames/{frame}"


def instance_modules(
    instance_url: str, ds: Dataset, image_id: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Every frame's imageId and modules of one instance (CPU work: run it off the loop).

    Raises ImageTooLargeError when the instance claims more than ``modules.MAX_FRAMES``.
    """
    by_frame = metadata_modules_by_frame(ds, image_id=image_id)
    return [(frame_image_id(instance_url, n), modules) for n, modules in enumerate(by_frame, 1)]


def register_instance(
    loader: LoaderServices, instance_url: str, ds: Dataset, frames: list[tuple[str, dict[str, Any]]]
) -> list[str]:
    """Register an instance's frame modules (from :func:`instance_modules`); on the loop."""
    loader.metadata.store.add_many(frames)
    return [image_id for image_id, _ in frames]


class InstanceFetcher:
    """Fetches the metadata of instances whose frames have none, once per instance at a time.

    Remembers how many frames each instance it fetched has (bounded, oldest out).
    """

    def __init__(self, loader: LoaderServices) -> None:
        self._loader = loader
        self._fetching: dict[str, Flight[int]] = {}
        self._frame_counts: OrderedDict[str, int] = OrderedDict()

    def close(self) -> None:
        """Cancel the fetches in flight."""
        for flight in self._fetching.values():
            flight.task.cancel()

    def frame_count(self, instance_url: str) -> int | None:
        """The number of frames of an instance whose metadata was fetched, if remembered."""
        return self._frame_counts.get(instance_url)

    async def fetch_instance(self, ctx: LoadContext, ref: WadoRsRef) -> int:
        """Fetch, parse and register the instance's metadata (one fetch for its frames).

        Returns its number of frames (NumberOfFrames; 1 without it), for the caller's
        range check (:func:`~imageloader.imageid.check_frame`).
        """
        url = ref.instance_url
        flight = self._fetching.get(url)
        if flight is None:
            flight = self._fetching[url] = Flight(self._fetch(ctx, url))
            flight.task.add_done_callback(lambda _: self._fetching.pop(url, None))
        return await flight.join(ctx.image_id)

    async def _fetch(self, ctx: LoadContext, url: str) -> int:
        response = await ctx.http.get(
            f"{url}/metadata",
            image_id=ctx.image_id,
            headers={"Accept": DICOM_JSON},
            max_bytes=ctx.limits.max_metadata_response_bytes,
        )
        items = await asyncio.to_thread(load_json, response.body, image_id=ctx.image_id, url=url)
        if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
            items = None  # not kept alive by the error's traceback
            raise ResponseFormatError(
                "instance metadata is not a list of one dataset", image_id=ctx.image_id, url=url
            )
        [(_, ds, frames)] = await parse_instances(ctx.http, [(url, items[0])], ctx.image_id)
        register_instance(self._loader, url, ds, frames)
        counts = self._frame_counts
        counts[url] = len(frames)
        counts.move_to_end(url)
        while len(counts) > _FRAME_COUNT_MEMORY:
            counts.popitem(last=False)
        return len(frames)
