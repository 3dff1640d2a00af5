"""Volumes: one preallocated array that a series' frames stream into.

``volume = await loader.create_and_cache_volume(volume_id, image_ids)`` returns as
soon as the geometry is known (every image's metadata, headers only) and the array
is allocated; the frames then load in the background, each copied into its slice
as it arrives, in scan order (:mod:`imageloader.geometry`). ``await volume.loaded()``
waits for the last one; ``volume.cancel_loading()`` stops what has not run.

Events, as Cornerstone's: ``VOLUME_LOADED`` (``volume``) when the volume is made
and cached, ``IMAGE_LOAD_PROGRESS`` per slice, ``IMAGE_VOLUME_LOADING_COMPLETED``
(counts, ``volume``) once every slice has loaded or failed; none after a cancel.

**Stages** (``stages=``), as Cornerstone's progressive (interleaved) retrieve: the
slices load stage after stage, each stage's loads all in flight together, and
``IMAGE_RETRIEVAL_STAGE`` (``stage_id``, counts, durations) when a stage is done.
``"interleaved"`` is :data:`INTERLEAVED`: every fourth slice first (from the
third), so the whole extent is there at a quarter of the slices, then the slices
between them, then the rest. A :class:`VolumeStage` names its slices by
``positions`` (indices in scan order; negative from the end; a float in [0, 1) a
fraction of the way, 0.5 the middle) or by ``decimate``/``offset`` (every
``decimate``-th slice from ``offset``), with its own ``request_type`` and
``decode_level``. A slice loaded at a decode level is placed enlarged (each pixel
repeated), is *provisional* (``volume.provisional``) and does not count as loaded;
any slice no stage loaded at full size loads in a last stage, ``"final"``, so
``volume.loaded()`` still means every slice at full size.

A volume's slices are not stored twice: each loaded frame's Image is cached as a
view into the volume array with size 0, so the volume's bytes count once in the
cache; image pressure never evicts a volume (``cache.remove_volume`` frees it).
Only a frame of the volume's own dtype is cached so: a later load of any image
gives what a fresh decode gives.

**The dtype** is the one the slices get under the pixel contract
(:mod:`imageloader.decode.pixels`), decided from the metadata before any slice
arrives (:func:`volume_dtype`); Cornerstone3D 2+ also keeps the native type. It is
the decode worker's rule, ``dtype_for_range(*scaled_range(lo, hi, scaling))``,
applied to the range the pixel module allows (Bits Stored and Pixel
Representation: :func:`~imageloader.decode.pixels.stored_range`) where the worker
uses one frame's min and max, joined over every slice's modules:

- an int16 CT is int16, 8-bit data uint8, unsigned 12- or 16-bit data uint16,
  colour uint8 RGB(A);
- float32 only where the modality LUT has fractions (PET SUV, RTDOSE
  DoseGridScaling, a slope like 0.5) or its range fits no integer type;
- integer data of at most 16 bits through a whole-number modality LUT stays in
  16 bits (int16 when the range goes below 0, else uint16) even though the extremes
  of Bits Stored would scale past them (a signed 16-bit CT with a ``-1024``
  intercept): Cornerstone's assumption too. A slice that does go past (stored
  -32768 padding: -33792) decodes as float32 and is refused, by name (below).

A slice can still decode to another dtype than the volume's, since the worker
decides from its values: signed data without negative values decodes unsigned,
a dark slice of a 16-bit series as uint8. It is copied in, cast, when its values
fit.

``dtype=`` asks for another dtype (a native integer or floating type). Whatever
the volume's dtype, a slice is copied in only when its values fit: unchanged (a
safe cast, or integers within an integer volume's range), or rounded to a floating
volume's precision within its range. Nothing is wrapped, clipped or truncated: a
slice that does not fit (floating values into an integer volume, values outside its
range) fails with :class:`~imageloader.errors.MetadataError` naming its imageId, in
``volume.failures`` (``loaded()`` raises :class:`~imageloader.errors.LoadFailedError`).
An integer ``dtype`` for a series the modality LUT makes floating is refused at
once (``ValueError``): cast ``volume.data`` yourself for that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import events as ev
from .decode.pixels import dtype_for_range, scaled_range, scaling_for, stored_range
from .dicom.modules import pixel_params_from_modules
from .errors import ImageLoaderError, ImageTooLargeError, LoadFailedError, MetadataError
from .geometry import SliceGeometry, slice_geometry
from .image import Image
from .metadata import ImagePixelModule, ImagePlaneModule
from .request_pool import RequestType

if TYPE_CHECKING:
    from .context import LoaderServices

__all__ = [
    "DTYPE_MODULES",
    "INTERLEAVED",
    "Volume",
    "VolumeStage",
    "cast_problem",
    "create_and_cache_volume",
    "volume_dtype",
]


@dataclass(frozen=True, slots=True)
class VolumeStage:
    """One retrieve stage of a volume (Cornerstone's ``IRetrieveConfiguration`` stage)."""

    id: str
    #: Slices by index in scan order (negative: from the end) or fraction (0.5: middle).
    positions: tuple[int | float, ...] = ()
    #: Or every ``decimate``-th slice from ``offset`` (decimate 0: by positions only).
    decimate: int = 0
    offset: int = 0
    #: The stage's request type (None: the volume's).
    request_type: RequestType | str | None = None
    #: The slices at 1/2ⁿ of their size, placed enlarged, provisional until loaded in full.
    decode_level: int = 0

    def indices(self, count: int) -> list[int]:
        """The slice indices this stage names, in order, once each, within ``count``."""
        chosen: list[int] = []
        for position in self.positions:
            if isinstance(position, float) and 0.0 <= position < 1.0:
                index = int(position * count)
            else:
                index = int(position) + (count if position < 0 else 0)
            if 0 <= index < count:
                chosen.append(index)
        if self.decimate > 0:
            chosen.extend(range(self.offset, count, self.decimate))
        return list(dict.fromkeys(chosen))


#: Every fourth slice first (from the third, as Cornerstone's interleaved retrieve
#: starts), then the second of every four, then the rest (the final stage).
INTERLEAVED = (
    VolumeStage("quarter", decimate=4, offset=3),
    VolumeStage("half", decimate=4, offset=1),
)


#: The modules :func:`volume_dtype` reads (as pixel_params_from_modules does): what
#: the other paths that build a series' array (a prefetch's writer, load_series_dask)
#: collect for it.
DTYPE_MODULES = ("imagePixelModule", "modalityLutModule", "generalSeriesModule", "scalingModule")
_INT16 = (-32768, 32767)
_UINT16 = (0, 65535)


def _is_colour(pixel: ImagePixelModule) -> bool:
    # As the decode worker: colour and palette frames become uint8 RGB(A).
    return pixel.samples_per_pixel > 1 or pixel.photometric_interpretation == "PALETTE COLOR"


def volume_dtype(*modules: Mapping[str, Any], prescale: bool = True) -> np.dtype[Any]:
    """The dtype of a volume of images with these modules (one mapping per slice).

    The decode worker's rule over what the metadata allows (see the module's
    docstring): uint8 for colour (by the first slice); otherwise the stored range
    of each slice through its modality LUT (``prescale``), joined, then
    ``dtype_for_range`` of it, with float32 for a LUT with fractions and integer
    data of at most 16 bits kept in 16 bits.
    """
    if not modules:
        raise MetadataError("no modules: a volume needs at least one image")
    lo, hi = float("inf"), float("-inf")
    fractions = False
    at_most_16_bits = True
    for index, slice_modules in enumerate(modules):
        pixel = slice_modules.get("imagePixelModule")
        if not isinstance(pixel, ImagePixelModule):
            raise MetadataError("no imagePixelModule")
        if _is_colour(pixel):
            if index == 0:
                return np.dtype(np.uint8)
            continue  # a colour slice in a greyscale series fails on its shape
        params = pixel_params_from_modules(slice_modules, "1.2.840.10008.1.2.1")
        scaling = scaling_for(params) if prescale else None
        fractions = fractions or (scaling is not None and not scaling.integral)
        at_most_16_bits = at_most_16_bits and pixel.bits_allocated <= 16
        low, high = scaled_range(*stored_range(params), scaling)
        lo, hi = min(lo, low), max(hi, high)
    if fractions:  # as every frame of such a slice decodes
        return np.dtype(np.float32)
    if at_most_16_bits:
        bound_lo, bound_hi = _INT16 if lo < 0 else _UINT16
        lo, hi = max(lo, bound_lo), min(hi, bound_hi)
    return dtype_for_range(lo, hi)


def _requested_dtype(dtype: npt.DTypeLike, volume_id: str) -> np.dtype[Any]:
    """``dtype`` as a numpy dtype: a native-order integer or floating type, or ValueError."""
    try:
        wanted = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"volume {volume_id!r}: dtype {dtype!r} is not a dtype") from exc
    if wanted.kind not in "iuf" or not wanted.isnative:
        raise ValueError(
            f"volume {volume_id!r}: dtype must be a native-order integer or floating type, "
            f"not {wanted}"
        )
    return wanted


def cast_problem(values: npt.NDArray[Any], dtype: np.dtype[Any]) -> str | None:
    """Why ``values`` cannot be copied into an array of ``dtype``, or None if they can.

    They can when the cast is safe, when integers lie within an integer type's
    range, and, for a floating ``dtype``, when they lie within its finite range
    (they are then rounded to its precision). Never when floating values would go
    into an integer type.
    """
    source = values.dtype
    if source == dtype or np.can_cast(source, dtype, "safe"):
        return None
    if dtype.kind in "iu":
        if source.kind not in "iub":
            lo, hi = _finite_range(values)
            return f"{source} values ({lo:g}..{hi:g}) would be truncated to {dtype}"
        info = np.iinfo(dtype)
        low, high = int(values.min()), int(values.max())
        if low < info.min or high > info.max:
            return f"values {low}..{high} are outside {dtype}'s range {info.min}..{info.max}"
        return None
    # NaN and infinities stay what they are; finite values must not overflow.
    limit = float(np.finfo(dtype).max)
    lo, hi = _finite_range(values)
    if lo < -limit or hi > limit:
        return f"values {lo:g}..{hi:g} are outside {dtype}'s range"
    return None


def _finite_range(values: npt.NDArray[Any]) -> tuple[float, float]:
    """Min and max of the finite values (0, 0 if there is none)."""
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
        if not values.size:
            return 0.0, 0.0
    return float(values.min()), float(values.max())


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
        #: Slice indices placed from a decode level, not yet loaded at full size.
        self.provisional: set[int] = set()
        #: Slice indices loaded at full size.
        self.loaded_slices: set[int] = set()
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
    dtype: npt.DTypeLike | None = None,
    stages: str | Sequence[VolumeStage] | None = None,
) -> Volume:
    """Allocate and cache a volume for ``image_ids``, and start streaming its slices.

    Its dtype is :func:`volume_dtype` of the slices' metadata, the one the decode
    worker gives the slices; ``dtype`` asks for another, into which each slice is
    copied only if its values fit (see the module's docstring). Raises
    :class:`~imageloader.errors.MetadataError` for missing metadata,
    :class:`~imageloader.errors.ImageTooLargeError` over ``max_volume_bytes``, and
    ``ValueError`` for a ``dtype`` that is not a native integer or floating type, or
    an integer one for floating data.
    """
    wanted = None if dtype is None else _requested_dtype(dtype, volume_id)
    plan = _stages(stages, volume_id)
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
    modules = [loader.metadata.modules(i, DTYPE_MODULES) for i in geometry.image_ids]
    for image_id, slice_modules in zip(geometry.image_ids, modules, strict=True):
        if not isinstance(slice_modules.get("imagePixelModule"), ImagePixelModule):
            raise MetadataError("no imagePixelModule: cannot size the slice", image_id=image_id)
    natural = volume_dtype(*modules, prescale=loader.default_options.prescale)
    if wanted is not None and natural.kind == "f" and wanted.kind in "iu":
        raise ValueError(
            f"volume {volume_id!r}: its slices are {natural} (the modality LUT has fractions); "
            f"{wanted} would truncate them: ask for a floating dtype"
        )
    array_dtype = natural if wanted is None else wanted
    pixel = modules[0]["imagePixelModule"]
    shape: tuple[int, ...] = (len(geometry.image_ids), pixel.rows, pixel.columns)
    if _is_colour(pixel):
        shape += (4 if loader.default_options.use_rgba else 3,)
    size = int(np.prod(shape)) * array_dtype.itemsize
    if size > loader.limits.max_volume_bytes:
        raise ImageTooLargeError(
            f"volume of {size} bytes exceeds max_volume_bytes ({loader.limits.max_volume_bytes})",
            image_id=volume_id,
        )
    volume = Volume(volume_id, geometry, np.zeros(shape, array_dtype))
    loader.cache.put_volume(volume)
    volume._task = asyncio.ensure_future(
        _stream(loader, volume, RequestType(request_type), priority, plan)
    )
    # Stop streaming if the loader closes first; forget that once streaming is done.
    forget = loader.add_closer(volume.cancel_loading)
    volume._task.add_done_callback(lambda _: forget())
    # As Cornerstone's volume loader: the volume is "loaded" (made and cached) now;
    # IMAGE_VOLUME_LOADING_COMPLETED follows when every slice has been processed.
    loader.events.emit(ev.VOLUME_LOADED, volume_id, volume=volume)
    return volume


def _stages(stages: str | Sequence[VolumeStage] | None, volume_id: str) -> tuple[VolumeStage, ...]:
    """The stages asked for, checked (ValueError for an unknown name or a bad stage)."""
    from .levels import check_level

    if stages is None:
        return ()
    if isinstance(stages, str):
        if stages != "interleaved":
            raise ValueError(f"volume {volume_id!r}: unknown stages {stages!r} (interleaved)")
        return INTERLEAVED
    chosen = tuple(stages)
    for stage in chosen:
        if not isinstance(stage, VolumeStage):
            raise ValueError(f"volume {volume_id!r}: a stage must be a VolumeStage: {stage!r}")
        check_level(stage.decode_level)
        if stage.decimate < 0 or stage.offset < 0:
            raise ValueError(f"volume {volume_id!r}: stage {stage.id!r}: negative decimate/offset")
    return chosen


async def _stream(
    loader: LoaderServices,
    volume: Volume,
    request_type: RequestType,
    priority: float,
    stages: tuple[VolumeStage, ...] = (),
) -> None:
    started = time.perf_counter()
    count = len(volume.image_ids)
    try:
        full: set[int] = set()  # loaded (or failed) at full size, or being
        for stage in stages:
            indices = [k for k in stage.indices(count) if k not in full]
            if not stage.decode_level:
                full.update(indices)
            rtype = RequestType(stage.request_type or request_type)
            await _run_stage(loader, volume, stage, indices, rtype, priority, started)
        rest = [k for k in range(count) if k not in full]
        final = VolumeStage("final") if stages else None
        await _run_stage(loader, volume, final, rest, request_type, priority, started)
    finally:
        volume.load_time_ms = (time.perf_counter() - started) * 1000
    # Every slice loaded or failed (not when cancelled), as Cornerstone fires it.
    loader.events.emit(
        ev.IMAGE_VOLUME_LOADING_COMPLETED,
        volume.volume_id,
        loaded=volume.loaded_count,
        failed=len(volume.failures),
        total=count,
        volume=volume,
    )


async def _run_stage(
    loader: LoaderServices,
    volume: Volume,
    stage: VolumeStage | None,
    indices: list[int],
    request_type: RequestType,
    priority: float,
    started: float,
) -> None:
    """Load the slices at ``indices`` (one stage; None: the volume without stages)."""
    stage_started = time.perf_counter()
    level = stage.decode_level if stage is not None else 0
    index = {volume.image_ids[k]: k for k in indices}
    failures = 0
    async for result in loader.iter_images(
        list(index),
        request_type=request_type,
        priority=priority,
        cache=False,
        return_exceptions=True,
        decode_level=level,
    ):
        if isinstance(result, ImageLoaderError):
            failures += 1
            if not level:
                volume.failures[result.image_id or "?"] = result
            continue
        k = index[result.image_id]
        if level:
            # Never over a slice already there at full size (a later stage's load).
            if k not in volume.loaded_slices and _place_enlarged(volume, k, result):
                volume.provisional.add(k)
            continue
        if not _place(loader, volume, k, result):
            failures += 1
            continue  # recorded in volume.failures
        volume.provisional.discard(k)
        volume.loaded_count += 1
        loader.events.emit(
            ev.IMAGE_LOAD_PROGRESS,
            volume.volume_id,
            slice_image_id=result.image_id,
            loaded=volume.loaded_count,
            failed=len(volume.failures),
            total=len(volume.image_ids),
        )
    if stage is not None:
        now = time.perf_counter()
        loader.events.emit(
            ev.IMAGE_RETRIEVAL_STAGE,
            volume.volume_id,
            stage_id=stage.id,
            number_of_images=len(indices),
            number_of_failures=failures,
            stage_duration_ms=(now - stage_started) * 1000,
            start_duration_ms=(now - started) * 1000,
            volume=volume,
        )


def _place_enlarged(volume: Volume, k: int, image: Image) -> bool:
    """A decode level's slice, each pixel repeated to the volume's size; False if it
    does not fit (the full-size load then decides)."""
    target = volume.data[k]
    pixels = image.pixel_data
    step = 1 << image.decode_level
    enlarged = np.repeat(np.repeat(pixels, step, axis=0), step, axis=1)
    enlarged = enlarged[: target.shape[0], : target.shape[1]]
    if enlarged.shape != target.shape or cast_problem(enlarged, target.dtype) is not None:
        return False
    target[...] = enlarged
    return True


def _place(loader: LoaderServices, volume: Volume, k: int, image: Image) -> bool:
    """Copy a slice into the volume; False (and a failure recorded) if it does not fit."""
    target = volume.data[k]
    pixels = image.pixel_data
    if pixels.shape != target.shape:
        volume.failures[image.image_id] = MetadataError(
            f"slice is {pixels.shape}, the volume expects {target.shape}",
            image_id=image.image_id,
        )
        return False
    problem = cast_problem(pixels, target.dtype)
    if problem is not None:
        volume.failures[image.image_id] = MetadataError(
            f"the {pixels.dtype} slice does not fit the {target.dtype} volume "
            f"{volume.volume_id!r}: {problem} (create_and_cache_volume(..., dtype=...) "
            "asks for a dtype that holds it)",
            image_id=image.image_id,
        )
        return False
    target[...] = pixels
    volume.loaded_slices.add(k)
    # The cached image is a view into the volume: its bytes count once, there. Only
    # in its own dtype: a load of it must give what a fresh decode gives.
    if pixels.dtype == target.dtype and loader.cache.get_volume(volume.volume_id) is volume:
        loader.cache.put_image(
            image.replace(pixel_data=target, data_type=target.dtype.name), size_in_bytes=0
        )
    return True
