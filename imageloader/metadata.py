"""Metadata: a registry of providers, a store loaders fill, and the standard modules.

``registry.get("imagePixelModule", image_id)`` asks each provider in priority order
(higher first, as Cornerstone's ``metaData.addProvider``) and returns the first
answer that is not None. Loaders put what they parse into :attr:`MetadataRegistry.store`;
callers add their own providers (which by default come before the store).

The module types carry Cornerstone's module names and fields in snake_case.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .limits import DEFAULT_MAX_METADATA_BYTES

__all__ = [
    "MODULE_TYPES",
    "GeneralImageModule",
    "GeneralSeriesModule",
    "ImagePixelModule",
    "ImagePlaneModule",
    "MetadataProvider",
    "MetadataRegistry",
    "MetadataStore",
    "ModalityLutModule",
    "MultiframeModule",
    "PatientModule",
    "PatientStudyModule",
    "ScalingModule",
    "SopCommonModule",
    "VoiLutModule",
    "module_to_json",
]

MetadataProvider = Callable[[str, str], Any]
"""``provider(module_type, image_id)`` → the module, or None if it has none."""

#: Priority of the built-in store; callers' providers (priority 0 by default) come first.
STORE_PRIORITY = -100


@dataclass(frozen=True, slots=True)
class ImagePixelModule:
    """Cornerstone's ``imagePixelModule``."""

    samples_per_pixel: int
    photometric_interpretation: str
    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    high_bit: int
    pixel_representation: int
    planar_configuration: int = 0
    pixel_aspect_ratio: tuple[float, float] | None = None
    smallest_pixel_value: float | None = None
    largest_pixel_value: float | None = None
    red_palette_color_lookup_table_descriptor: tuple[int, int, int] | None = None
    green_palette_color_lookup_table_descriptor: tuple[int, int, int] | None = None
    blue_palette_color_lookup_table_descriptor: tuple[int, int, int] | None = None
    red_palette_color_lookup_table_data: np.ndarray[Any, Any] | None = None
    green_palette_color_lookup_table_data: np.ndarray[Any, Any] | None = None
    blue_palette_color_lookup_table_data: np.ndarray[Any, Any] | None = None


@dataclass(frozen=True, slots=True)
class ImagePlaneModule:
    """Cornerstone's ``imagePlaneModule``; spacing defaults to 1 with ``using_default_values``."""

    rows: int
    columns: int
    frame_of_reference_uid: str | None = None
    image_orientation_patient: tuple[float, ...] | None = None
    row_cosines: tuple[float, float, float] | None = None
    column_cosines: tuple[float, float, float] | None = None
    image_position_patient: tuple[float, float, float] | None = None
    slice_thickness: float | None = None
    slice_location: float | None = None
    spacing_between_slices: float | None = None
    pixel_spacing: tuple[float, float] | None = None
    row_pixel_spacing: float | None = None
    column_pixel_spacing: float | None = None
    using_default_values: bool = False


@dataclass(frozen=True, slots=True)
class GeneralSeriesModule:
    """Cornerstone's ``generalSeriesModule``."""

    modality: str | None = None
    series_instance_uid: str | None = None
    series_number: int | None = None
    study_instance_uid: str | None = None
    series_description: str | None = None
    series_date: str | None = None
    series_time: str | None = None
    acquisition_date: str | None = None
    acquisition_time: str | None = None


@dataclass(frozen=True, slots=True)
class GeneralImageModule:
    """Cornerstone's ``generalImageModule``."""

    sop_instance_uid: str | None = None
    instance_number: int | None = None
    lossy_image_compression: str | None = None
    lossy_image_compression_ratio: float | None = None
    lossy_image_compression_method: str | None = None
    image_type: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class PatientModule:
    """Cornerstone's ``patientModule``: who the images are of (identifying: treat as PHI)."""

    patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None


@dataclass(frozen=True, slots=True)
class PatientStudyModule:
    """Cornerstone's ``patientStudyModule``."""

    patient_age: str | None = None
    patient_size: float | None = None
    patient_sex: str | None = None
    patient_weight: float | None = None
    study_date: str | None = None
    study_time: str | None = None
    study_description: str | None = None


@dataclass(frozen=True, slots=True)
class SopCommonModule:
    """Cornerstone's ``sopCommonModule``."""

    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None


@dataclass(frozen=True, slots=True)
class VoiLutModule:
    """Cornerstone's ``voiLutModule``: every window the object lists."""

    window_center: tuple[float, ...] | None = None
    window_width: tuple[float, ...] | None = None
    voi_lut_function: str | None = None


@dataclass(frozen=True, slots=True)
class ModalityLutModule:
    """Cornerstone's ``modalityLutModule``."""

    rescale_intercept: float | None = None
    rescale_slope: float | None = None
    rescale_type: str | None = None


@dataclass(frozen=True, slots=True)
class MultiframeModule:
    """Cornerstone's ``multiframeModule``."""

    number_of_frames: int = 1
    frame_number: int | None = None
    frame_time: float | None = None
    frame_time_vector: tuple[float, ...] | None = None
    frame_increment_pointer: str | None = None


@dataclass(frozen=True, slots=True)
class ScalingModule:
    """Cornerstone's ``scalingModule``: factors beyond the modality LUT.

    ``suvbw``: PET body-weight SUV factor; ``dose_grid_scaling``: RTDOSE DoseGridScaling.
    """

    suvbw: float | None = None
    dose_grid_scaling: float | None = None


MODULE_TYPES: Mapping[str, type] = {
    "imagePixelModule": ImagePixelModule,
    "imagePlaneModule": ImagePlaneModule,
    "generalSeriesModule": GeneralSeriesModule,
    "generalImageModule": GeneralImageModule,
    "patientModule": PatientModule,
    "patientStudyModule": PatientStudyModule,
    "sopCommonModule": SopCommonModule,
    "voiLutModule": VoiLutModule,
    "modalityLutModule": ModalityLutModule,
    "multiframeModule": MultiframeModule,
    "scalingModule": ScalingModule,
}


def module_to_json(module: Any) -> Any:
    """A module (or any value inside one) as plain JSON-ready Python values."""
    if dataclasses.is_dataclass(module) and not isinstance(module, type):
        return {f.name: module_to_json(getattr(module, f.name)) for f in dataclasses.fields(module)}
    if isinstance(module, np.ndarray):
        return module.tolist()
    if isinstance(module, np.generic):
        return module.item()
    if isinstance(module, Mapping):
        return {str(k): module_to_json(v) for k, v in module.items()}
    if isinstance(module, (list, tuple)):
        return [module_to_json(v) for v in module]
    if isinstance(module, bytes):
        return module.hex()
    return module


_FIELDS: dict[type, tuple[str, ...]] = {}


def _footprint(module: Any) -> int:
    """Approximate bytes held by one metadata module (cheap: it runs once per frame).

    A module is a small dataclass of numbers, strings and tuples, or a dict of them;
    arrays (palette lookup tables) count at their size.
    """
    if isinstance(module, Mapping):
        values: Iterable[Any] = module.values()
    else:
        cls = type(module)
        names = _FIELDS.get(cls)
        if names is None:
            fields = dataclasses.fields(module) if dataclasses.is_dataclass(module) else ()
            names = _FIELDS[cls] = tuple(f.name for f in fields)
        values = [getattr(module, name) for name in names]
    size = sys.getsizeof(module)
    for value in values:
        if isinstance(value, np.ndarray):
            size += 112 + value.nbytes
        elif isinstance(value, (str, bytes)):
            size += 49 + len(value)
        elif isinstance(value, (tuple, list)):
            size += 56 + 40 * len(value)
        elif value is not None:
            size += 32
    return size


class MetadataStore:
    """Modules by imageId, filled by loaders; a provider like any other.

    Bounded: an LRU of at most ``max_bytes`` (approximate: the modules' objects and
    arrays; a module shared by several imageIds, like a series' modules, counts once
    per :meth:`add_many` call). Loading an image touches its entry; the least
    recently used entries are forgotten first, so a service that loads millions of
    distinct images holds a constant amount. A forgotten entry comes back when its
    image is loaded again.
    """

    #: Bytes of one entry's dict and key, on top of its modules.
    ENTRY_OVERHEAD = 400

    def __init__(self, max_bytes: int = DEFAULT_MAX_METADATA_BYTES) -> None:
        self.max_bytes = max_bytes
        self._modules: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._sizes: dict[str, int] = {}
        self.size_bytes = 0

    def add(self, image_id: str, modules: Mapping[str, Any]) -> None:
        """Register (or update) modules for an imageId."""
        self._add(image_id, modules, {})
        self._trim()

    def add_many(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Register modules for many imageIds."""
        seen: dict[int, int] = {}
        for image_id, modules in items:
            self._add(image_id, modules, seen)
        self._trim()

    def _add(self, image_id: str, modules: Mapping[str, Any], seen: dict[int, int]) -> None:
        entry = self._modules.get(image_id)
        if entry is None:
            entry = self._modules[image_id] = {}
            self._sizes[image_id] = self.ENTRY_OVERHEAD + sys.getsizeof(image_id)
            self.size_bytes += self._sizes[image_id]
        else:
            self._modules.move_to_end(image_id)
        added = 0
        for name, module in modules.items():
            if entry.get(name) is not module:
                key = id(module)
                if key not in seen:
                    seen[key] = _footprint(module)
                    added += seen[key]
        entry.update(modules)
        self._sizes[image_id] += added
        self.size_bytes += added

    def _trim(self) -> None:
        # The newest entry stays even when it alone is over the bound.
        while self.size_bytes > self.max_bytes and len(self._modules) > 1:
            self.remove(next(iter(self._modules)))

    def remove(self, image_id: str) -> None:
        """Forget an imageId's modules."""
        if self._modules.pop(image_id, None) is not None:
            self.size_bytes -= self._sizes.pop(image_id)

    def clear(self) -> None:
        """Forget everything."""
        self._modules.clear()
        self._sizes.clear()
        self.size_bytes = 0

    def modules(self, image_id: str) -> dict[str, Any]:
        """Every module stored for an imageId (a copy); marks it recently used."""
        entry = self._modules.get(image_id)
        if entry is None:
            return {}
        self._modules.move_to_end(image_id)
        return dict(entry)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def image_ids(self) -> list[str]:
        """The imageIds with modules, least recently used first."""
        return list(self._modules)

    def __call__(self, module_type: str, image_id: str) -> Any:
        modules = self._modules.get(image_id)
        return None if modules is None else modules.get(module_type)


class MetadataRegistry:
    """Providers in priority order (higher first; ties in the order added)."""

    def __init__(self, *, max_store_bytes: int = DEFAULT_MAX_METADATA_BYTES) -> None:
        self._order = itertools.count()
        self._providers: list[tuple[float, int, MetadataProvider]] = []
        self.store = MetadataStore(max_store_bytes)
        self.add_provider(self.store, priority=STORE_PRIORITY)

    def add_provider(self, provider: MetadataProvider, priority: float = 0) -> None:
        """Consult ``provider(module_type, image_id)``; higher priorities are asked first."""
        if not callable(provider):
            raise TypeError("a metadata provider is a callable (module_type, image_id) -> module")
        self._providers.append((-priority, next(self._order), provider))
        self._providers.sort(key=lambda p: (p[0], p[1]))

    def remove_provider(self, provider: MetadataProvider) -> bool:
        """Remove a provider; returns whether it was registered."""
        before = len(self._providers)
        self._providers = [p for p in self._providers if p[2] is not provider]
        return len(self._providers) != before

    def get(self, module_type: str, image_id: str) -> Any:
        """The first non-None answer, or None when no provider knows the module."""
        for _, _, provider in self._providers:
            value = provider(module_type, image_id)
            if value is not None:
                return value
        return None

    def modules(self, image_id: str, types: Iterable[str] = MODULE_TYPES) -> dict[str, Any]:
        """Every known standard module of an imageId, by name (missing ones left out)."""
        found = {}
        for module_type in types:
            value = self.get(module_type, image_id)
            if value is not None:
                found[module_type] = value
        return found
