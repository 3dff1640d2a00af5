"""Volumes: one preallocated array that a series' frames stream into.

``volume = await loader.create_and_cache_volume(volume_id, image_ids)`` returns as
soon as the geometry is known (every image's metadata, headers only) and the array
is allocated; the frames then load in the background, each copied into its slice
as it arrives, in scan order (:mod:`imageloader.geometry`). ``await volume.loaded()``
waits for the last one; ``volume.cancel_loading()`` stops what has not run.

Events, as Cornerstone's: ``VOLUME_LOADED`` (``volume``) when the volume is made
and cached, ``IMAGE_LOAD_PROGRESS`` per slice, ``IMAGE_VOLUME_LOADING_COMPLETED``
(counts, ``volume``) once every slice has loaded or failed; none after a cancel.

A volume's slices are not stored twice: each loaded frame's Image is cached as a
view into the volume array with size 0, so the volume's bytes count once in the
cache; image pressure never evicts a volume (``cache.remove_volume`` frees it).

The dtype follows Cornerstone3D's volume rule: 16- and 32-bit greyscale data is
float32 (``use_16bit=True`` keeps int16/uint16 when the scaled range allows it),
8-bit data keeps 8 bits when its scaled range fits, colour is uint8 RGB.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import events as ev
from .decode.pixels import dtype_for_range, scaling_for
from .dicom.modules import pixel_params_from_modules
from .errors import ImageLoaderError, ImageTooLargeError, LoadFailedError, MetadataError
from .geometry import SliceGeometry, slice_geometry
from .image import Image
from .metadata import ImagePixelModule, ImagePlaneModule
from .request_pool import RequestType

if TYPE_CHECKING:
    from .context import LoaderServices

__all__ = ["Volume", "create_and_cache_volume", "volume_dtype"]


def volume_dtype(
    modules: dict[str, Any], *, prescale: bool = True, use_16bit: bool = False
) -> np.dtype[Any]:
    """The array dtype for a volume of images with these modules (Cornerstone's rule)."""
    pixel = modules.get("imagePixelModule")
    if not isinstance(pixel, ImagePixelModule):
        raise MetadataError("no imagePixelModule")
    if pixel.samples_per_pixel > 1 or pixel.photometric_interpretation == "PALETTE COLOR":
        return np.dtype(np.uint8)
    bits = pixel.bits_stored
    if pixel.pixel_representation:
        lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    else:
        lo, hi = 0.0, 2.0**bits - 1
    if prescale:
        scaling = scaling_for(pixel_params_from_modules(modules, "1.2.840.10008.1.2.1"))
        if scaling is not None:
            lo, hi = sorted((scaling.apply(lo), scaling.apply(hi)))
    fitted = dtype_for_range(lo, hi)
    if (pixel.bits_allocated >= 16 and not use_16bit) or fitted.itemsize > 2:
        return np.dtype(np.float32)
    return fitted


class Volume:
    """A 3-D array of slices ``(slices, rows, columns[, 3])`` and its geometry."""

    def __init__(
        self,
        volume_id: str,
        geometry: SliceGeometry,
        data: npt.NDArray[Any],
    ) -> None:
        self.volume_id = volume_id
        self.geometry = geometry
        self.image_ids = geometry.image_ids
        self.data = data
        self.loaded_count = 0
        self.failures: dict[str, ImageLoaderError] = {}
        self._task: asyncio.Task[None] | None = None
        self.load_time_ms = 0.0

    @property
    def dimensions(self) -> tuple[int, int, int]:
        """``(columns, rows, slices)``: x, y, z, as Cornerstone reports them."""
        return (int(self.data.shape[2]), int(self.data.shape[1]), int(self.data.shape[0]))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along x, y, z in mm."""
        return self.geometry.spacing

    @property
    def origin(self) -> tuple[float, float, float]:
        """Patient position of the first voxel."""
        return self.geometry.origin

    @property
    def direction(self) -> tuple[float, ...]:
        """Row, column and slice direction cosines (nine numbers)."""
        return self.geometry.direction

    @property
    def size_in_bytes(self) -> int:
        """Bytes of the array."""
        return int(self.data.nbytes)

    @property
    def done(self) -> bool:
        """Whether loading has finished (or was cancelled)."""
        return self._task is None or self._task.done()

    async def loaded(self) -> None:
        """Wait until every slice has loaded; raise if any could not be."""
        if self._task is not None:
            await asyncio.shield(self._task)
        if self.failures:
            first_id, first = next(iter(self.failures.items()))
            raise LoadFailedError(
                f"{len(self.failures)} of {len(self.image_ids)} slices failed; "
                f"first: {first_id}: {first}",
                image_id=self.volume_id,
            )

    def cancel_loading(self) -> None:
        """Stop loading the slices that have not loaded yet."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def __repr__(self) -> str:
        return (
            f"<Volume {self.volume_id!r} {self.dimensions} {self.data.dtype} "
            f"{self.loaded_count}/{len(self.image_ids)} loaded>"
        )


async def create_and_cache_volume(
    loader: LoaderServices,
    volume_id: str,
    image_ids: Sequence[str],
    *,
    request_type: RequestType | str = RequestType.PREFETCH,
    priority: float = 0,
    use_16bit: bool = False,
) -> Volume:
    """Allocate and cache a volume for ``image_ids``, and start streaming its slices."""
    if not image_ids:
        raise MetadataError("a volume needs at least one image", image_id=volume_id)
    await loader.load_metadata(image_ids)
    planes: dict[str, ImagePlaneModule] = {}
    for image_id in image_ids:
        plane = loader.metadata.get("imagePlaneModule", image_id)
        if not isinstance(plane, ImagePlaneModule):
            raise MetadataError("no imagePlaneModule: cannot place the slice", image_id=image_id)
        planes[image_id] = plane
    geometry = slice_geometry(planes)
    first = loader.metadata.modules(geometry.image_ids[0])
    dtype = volume_dtype(first, prescale=loader.default_options.prescale, use_16bit=use_16bit)
    pixel = first["imagePixelModule"]
    colour = pixel.samples_per_pixel > 1 or pixel.photometric_interpretation == "PALETTE COLOR"
    shape: tuple[int, ...] = (len(geometry.image_ids), pixel.rows, pixel.columns)
    if colour:
        shape += (4 if loader.default_options.use_rgba else 3,)
    size = int(np.prod(shape)) * dtype.itemsize
    if size > loader.limits.max_volume_bytes:
        raise ImageTooLargeError(
            f"volume of {size} bytes exceeds max_volume_bytes ({loader.limits.max_volume_bytes})",
            image_id=volume_id,
        )
    volume = Volume(volume_id, geometry, np.zeros(shape, dtype))
    loader.cache.put_volume(volume)
    volume._task = asyncio.ensure_future(
        _stream(loader, volume, RequestType(request_type), priority)
    )
    # Stop streaming if the loader closes first; forget that once streaming is done.
    forget = loader.add_closer(volume.cancel_loading)
    volume._task.add_done_callback(lambda _: forget())
    # As Cornerstone's volume loader: the volume is "loaded" (made and cached) now;
    # IMAGE_VOLUME_LOADING_COMPLETED follows when every slice has been processed.
    loader.events.emit(ev.VOLUME_LOADED, volume_id, volume=volume)
    return volume


async def _stream(
    loader: LoaderServices, volume: Volume, request_type: RequestType, priority: float
) -> None:
    started = time.perf_counter()
    index = {image_id: k for k, image_id in enumerate(volume.image_ids)}
    total = len(volume.image_ids)
    try:
        async for result in loader.iter_images(
            volume.image_ids,
            request_type=request_type,
            priority=priority,
            cache=False,
            return_exceptions=True,
        ):
            if isinstance(result, ImageLoaderError):
                volume.failures[result.image_id or "?"] = result
                continue
            _place(loader, volume, index[result.image_id], result)
            volume.loaded_count += 1
            loader.events.emit(
                ev.IMAGE_LOAD_PROGRESS,
                volume.volume_id,
                slice_image_id=result.image_id,
                loaded=volume.loaded_count,
                failed=len(volume.failures),
                total=total,
            )
    finally:
        volume.load_time_ms = (time.perf_counter() - started) * 1000
    # Every slice loaded or failed (not when cancelled), as Cornerstone fires it.
    loader.events.emit(
        ev.IMAGE_VOLUME_LOADING_COMPLETED,
        volume.volume_id,
        loaded=volume.loaded_count,
        failed=len(volume.failures),
        total=total,
        volume=volume,
    )


def _place(loader: LoaderServices, volume: Volume, k: int, image: Image) -> None:
    target = volume.data[k]
    if image.pixel_data.shape != target.shape:
        volume.failures[image.image_id] = MetadataError(
            f"slice is {image.pixel_data.shape}, the volume expects {target.shape}",
            image_id=image.image_id,
        )
        return
    target[...] = image.pixel_data
    if loader.cache.get_volume(volume.volume_id) is volume:
        # The cached image is a view into the volume: its bytes count once, there.
        loader.cache.put_image(
            image.replace(pixel_data=target, data_type=target.dtype.name), size_in_bytes=0
        )
