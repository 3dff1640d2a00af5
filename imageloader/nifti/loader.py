"""The ``nifti:`` loader and metadata loader, and the imageIds of a file's slices.

See :mod:`imageloader.nifti` for the imageId, what is read when, and the limits;
:mod:`.header` reads headers, :mod:`.geometry` makes the metadata modules,
:mod:`.volume` holds a whole file and cuts its frames.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..decode.image import create_image
from ..decode.params import DecodedFrame
from ..errors import InvalidImageIdError, LoaderClosedError
from ..image import Image
from ..imageid import check_frame, http_url, split_scheme
from ..metadata import ModalityLutModule, VoiLutModule
from ..objectcache import ObjectCache
from .geometry import frame_modules, voi_module
from .header import HeaderReader, NiftiInfo, check_limits, parse_header, read_file_head
from .volume import NiftiVolume, frame_pixels, read_file, read_volume

if TYPE_CHECKING:
    import aiohttp

    from ..context import LoadContext, LoaderServices

__all__ = [
    "SCHEME",
    "NiftiLoader",
    "create_nifti_image_ids",
    "load_nifti",
    "load_nifti_metadata",
    "nifti_image_id",
    "parse_nifti_id",
    "read_nifti_header",
]

SCHEME = "nifti"
#: NIfTI records no modality: "OT" (other) unless the caller knows better.
DEFAULT_MODALITY = "OT"

logger = logging.getLogger("imageloader.nifti")
_FRAME = re.compile(r"[0-9]{1,9}")


def nifti_image_id(source: str, frame: int) -> str:
    """The imageId of frame ``frame`` (0-based) of the file at ``source``."""
    return f"{SCHEME}:{source}?frame={frame}"


def parse_nifti_id(image_id: str) -> tuple[str, int]:
    """``nifti:https://h/a.nii.gz?frame=3`` → ``("https://h/a.nii.gz", 3)``."""
    _, rest = split_scheme(image_id)
    source, sep, frame = rest.rpartition("?frame=")
    if not sep or not source:
        raise InvalidImageIdError(
            "expected nifti:<url or path>?frame=<0-based frame>", image_id=image_id
        )
    if not _FRAME.fullmatch(frame):
        raise InvalidImageIdError(f"frame must be a number >= 0, not {frame!r}", image_id=image_id)
    _check_source(source, image_id)
    return source, int(frame)


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _check_source(source: str, image_id: str) -> None:
    if _is_url(source):
        http_url(source, image_id)
    elif "://" in source:
        raise InvalidImageIdError(
            "only http(s) URLs and local paths can be read", image_id=image_id
        )


def _key_of(image_id: str) -> str | None:
    try:
        scheme, _ = split_scheme(image_id)
        return parse_nifti_id(image_id)[0] if scheme == SCHEME else None
    except InvalidImageIdError:
        return None


# -- reading --------------------------------------------------------------------------
async def _fetch_head(loader: LoaderServices, source: str, image_id: str) -> tuple[bytes, int]:
    """The header bytes of ``source`` and how many bytes were read to get them."""
    if not _is_url(source):
        path = await asyncio.to_thread(loader.access.resolve_path, source, image_id=image_id)
        return await asyncio.to_thread(read_file_head, path, image_id)

    async def consume(response: aiohttp.ClientResponse) -> tuple[bytes, int]:
        reader = HeaderReader(image_id)  # one per attempt: a retry starts over
        async for chunk in response.content.iter_any():
            if reader.feed(chunk):
                break  # the connection is closed, not drained: the rest never comes
        return reader.finish(), reader.wire_bytes

    return await loader.http.request(source, consume, image_id=image_id)


async def read_nifti_header(loader: LoaderServices, source: str) -> tuple[NiftiInfo, int]:
    """Parse the header of ``source`` (URL or path) alone.

    Returns the header and the bytes read (from the wire or the disk) to get it.
    """
    image_id = f"{SCHEME}:{source}"
    if loader.closed:
        raise LoaderClosedError("this ImageLoader is closed", image_id=image_id)
    _check_source(source, image_id)
    loader.access.check_scheme(image_id)
    head, read = await _fetch_head(loader, source, image_id)
    info = await asyncio.to_thread(parse_header, head, image_id)
    check_limits(info, loader.limits, image_id)
    return info, read


async def create_nifti_image_ids(
    loader: LoaderServices,
    source: str,
    *,
    timepoint: int = 0,
    modality: str = DEFAULT_MODALITY,
) -> list[str]:
    """The imageIds of the slices of one volume of a NIfTI file, metadata registered.

    ``source`` is an http(s) URL or a local path (a leading ``nifti:`` is allowed).
    Only the header is read. Slices are listed in file order, ``k = 0 .. nz-1``;
    ``timepoint`` selects the volume of a 4-D (or higher) file. ``modality`` goes
    into each slice's generalSeriesModule (NIfTI does not record one).
    """
    if source.startswith(f"{SCHEME}:"):
        source = source[len(SCHEME) + 1 :]
    info, _ = await read_nifti_header(loader, source)
    volumes = info.frames // info.slices
    if not 0 <= timepoint < volumes:
        raise InvalidImageIdError(
            f"timepoint {timepoint} is outside 0..{volumes - 1}",
            image_id=f"{SCHEME}:{source}",
        )
    first = timepoint * info.slices
    frames = range(first, first + info.slices)

    def build() -> list[tuple[str, dict[str, Any]]]:
        return [
            (nifti_image_id(source, f), frame_modules(info, source, f, modality)) for f in frames
        ]

    # Hundreds of slices' modules: built off the loop, stored on it.
    entries = await asyncio.to_thread(build)
    loader.metadata.store.add_many(entries)
    return [image_id for image_id, _ in entries]


class NiftiLoader:
    """The ``nifti:`` loader of one ImageLoader: the headers and files it holds."""

    def __init__(self, services: LoaderServices) -> None:
        # A file is worth keeping if the image cache could hold its slices: one
        # larger than both bounds is served to the slices loading now, then dropped.
        self.keep_limit = max(services.limits.dataset_cache_bytes, services.cache.max_size_bytes)
        # Headers are small (~4 KB with their geometry): many files' worth are kept,
        # within the loader's metadata bound, so that the metadata of many slices of
        # one file costs one header read.
        limits = services.limits
        self.headers: ObjectCache[NiftiInfo] = ObjectCache(
            max_entries=limits.dataset_cache_entries * 64,
            max_bytes=limits.max_metadata_bytes,
            size_of=lambda _: 4096,
        )
        self.volumes: ObjectCache[NiftiVolume] = ObjectCache(
            max_entries=limits.dataset_cache_entries,
            max_bytes=self.keep_limit,
            size_of=lambda volume: volume.size_in_bytes,
            key_of=_key_of,
            events=services.events,
        )

    async def aclose(self) -> None:
        """Drop the headers and files held, and cancel their reads."""
        self.headers.clear()
        self.volumes.clear()

    async def load_metadata(self, image_id: str, ctx: LoadContext) -> None:
        """A slice's modules from its file's header alone.

        For imageIds not made by :func:`create_nifti_image_ids` (volumes call this
        for slices whose metadata is unknown). One header read serves every slice
        of a file; modules already registered for the imageId are kept.
        """
        source, frame = parse_nifti_id(image_id)

        async def read() -> NiftiInfo:
            return (await read_nifti_header(ctx.loader, source))[0]

        info = await self.headers.get(source, read, image_id=image_id)
        check_frame(frame, info.frames, image_id, first=0)
        store = ctx.metadata.store
        known = store.modules(image_id)
        modules = frame_modules(info, source, frame, DEFAULT_MODALITY)
        store.add(image_id, {name: m for name, m in modules.items() if name not in known})

    async def load(self, image_id: str, ctx: LoadContext) -> Image:
        """One frame of a NIfTI file (the file downloaded or read once for all)."""
        source, frame = parse_nifti_id(image_id)
        path = None
        if not _is_url(source):
            # Every imageId passes the policy, even when its file is already held.
            path = await asyncio.to_thread(ctx.access.resolve_path, source, image_id=image_id)
        # One download serves many slices: an error names this one.
        volume = await self.volumes.get(
            source, lambda: self._download(source, path, ctx, image_id), image_id=image_id
        )
        info = volume.info
        check_frame(frame, info.frames, image_id, first=0)
        store = ctx.metadata.store
        if image_id not in store:
            store.add(image_id, frame_modules(info, source, frame, DEFAULT_MODALITY))
        if store("voiLutModule", image_id) is None:
            # No display range in the header: the whole file's, so every slice of a
            # volume opens with the same window.
            store.add(image_id, {"voiLutModule": _data_window(volume)})
        return await asyncio.to_thread(
            _create_image, image_id, volume, frame, ctx.options.prescale, store.modules(image_id)
        )

    async def _download(
        self, source: str, path: Path | None, ctx: LoadContext, image_id: str
    ) -> NiftiVolume:
        """The file's volume: ``path`` is the local file already resolved (None: a URL)."""
        if path is None:
            body = (await ctx.http.get(source, image_id=image_id)).body
        else:
            body = await asyncio.to_thread(read_file, path, ctx.limits.max_response_bytes, image_id)
        volume = await asyncio.to_thread(read_volume, body, image_id, ctx.limits)
        if volume.size_in_bytes > self.keep_limit:
            logger.warning(
                "%s: %d bytes of voxels is more than the cache holds; each of its slices "
                "will download it again",
                source,
                volume.size_in_bytes,
            )
        return volume


def _loader(ctx: LoadContext) -> NiftiLoader:
    loader = ctx.loader.builtin_loader(SCHEME)
    assert isinstance(loader, NiftiLoader)
    return loader


async def load_nifti(image_id: str, ctx: LoadContext) -> Image:
    """The ``nifti:`` loader: one frame of a NIfTI file (the ImageLoader's :class:`NiftiLoader`)."""
    return await _loader(ctx).load(image_id, ctx)


async def load_nifti_metadata(image_id: str, ctx: LoadContext) -> None:
    """The ``nifti:`` metadata loader: a slice's modules from its file's header alone."""
    await _loader(ctx).load_metadata(image_id, ctx)


def _data_window(volume: NiftiVolume) -> VoiLutModule:
    """A window over the file's values after the modality LUT (as DICOM's VOI is)."""
    info = volume.info
    ends = [volume.stored_min, volume.stored_max]
    if info.slope is not None:
        ends = [v * info.slope + (info.intercept or 0.0) for v in ends]
    return voi_module(min(ends), max(ends))


def _create_image(
    image_id: str, volume: NiftiVolume, frame: int, prescale: bool, modules: dict[str, Any]
) -> Image:
    """The Image of one frame (blocking: runs in a worker thread)."""
    cut = frame_pixels(volume, frame, prescale)
    # The stored modules, which a caller may have replaced: without a usable window,
    # the whole file's; slope and intercept are those the cut applied (or not).
    voi = modules.get("voiLutModule")
    if not (isinstance(voi, VoiLutModule) and voi.window_center and voi.window_width):
        voi = _data_window(volume)
    lut = ModalityLutModule(
        rescale_slope=cut.prescale.slope, rescale_intercept=cut.prescale.intercept
    )
    decoded = DecodedFrame(
        pixels=cut.pixels,
        min_value=cut.min_value,
        max_value=cut.max_value,
        color=False,
        photometric_interpretation="MONOCHROME2",
        prescale=cut.prescale,
        decode_ms=cut.decode_ms,
        codec="nifti",
    )
    return create_image(
        image_id, decoded, {**modules, "voiLutModule": voi, "modalityLutModule": lut}
    )
