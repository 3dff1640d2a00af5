"""The prefetch output on disk: frames staged one by one, then one volume per series.

Layout under the output directory ``OUT``::

    OUT/<series>.npy             the series' frames stacked, (n, rows, columns[, components]),
                                 in scan order (imageloader.geometry.slice_geometry)
    OUT/<series>/0000.npy ...    instead, one file per frame when the frames differ in size
    OUT/<series>.json            the manifest: imageIds in array order, geometry, every
                                 frame's metadata modules and Image fields. Written last:
                                 its presence is what marks the series complete.
    OUT/.staging/<series>/       frames loaded but not yet assembled (``<hash>.npy`` and a
                                 ``<hash>.json`` sidecar, the sidecar written second);
                                 a series' folder goes once it is written, and
                                 ``.staging`` itself when a run ends with it empty

**The dtype** of a series' ``.npy`` is a volume's (:func:`imageloader.volume.volume_dtype`
of the frames' metadata modules, from their sidecars), so a prefetch, a volume and
``load_series_dask`` give one array: not the frames' own dtypes, which the decode
decides from each frame's values (a signed series without negative values decodes
unsigned, a dark frame of a 16-bit series as uint8). A frame is copied in only when
its values fit (:func:`~imageloader.volume.cast_problem`): never wrapped, clipped or
truncated; one that does not fails the series with
:class:`~imageloader.errors.MetadataError` naming its imageId, and its frames stay
staged. Only where a frame's sidecar has no ``imagePixelModule`` (a custom loader
that registers none) is the dtype the frames' common type (``numpy.result_type``).
The manifest's ``dtype`` is the array's; each frame's ``image`` fields are its Image
as decoded (its ``data_type`` may be narrower than the array's, its values the same).

Every file is written to a temporary name and moved into place with ``os.replace``,
so an interrupted run leaves either the old state or the new one, never half a file;
a later run skips complete series and staged frames, and loads only the rest.
``<series>`` is the SeriesInstanceUID (``no-series`` for images without one).

All methods block (file I/O): call them from a worker thread, not the event loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageLoaderError, MetadataError
from ..geometry import slice_geometry
from ..image import Image
from ..metadata import MODULE_TYPES, ImagePixelModule, ImagePlaneModule, module_to_json

__all__ = [
    "FORMATS",
    "NO_SERIES",
    "OutputConflictError",
    "SeriesWriter",
    "StagedFrame",
    "WrittenSeries",
    "image_fields",
    "manifests",
    "series_key",
]

NO_SERIES = "no-series"
#: The output formats :class:`SeriesWriter` writes.
FORMATS = ("npy", "nifti")
STAGING = ".staging"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class OutputConflictError(ImageLoaderError):
    """The series is already complete on disk with other frames; it is left as it is."""


def series_key(modules: Mapping[str, Any]) -> str:
    """The file name stem of the series an image belongs to (from its metadata modules)."""
    series = modules.get("generalSeriesModule")
    uid = getattr(series, "series_instance_uid", None)
    if isinstance(series, Mapping):
        uid = series.get("series_instance_uid")
    if not uid:
        return NO_SERIES
    key = _UNSAFE.sub("_", str(uid)).strip(".")
    return key[:128] or NO_SERIES


def image_fields(image: Image) -> dict[str, Any]:
    """An Image's fields as JSON-ready values, without the pixels."""
    fields: dict[str, Any] = {
        f.name: module_to_json(getattr(image, f.name))
        for f in dataclasses.fields(image)
        if f.name != "pixel_data"
    }
    fields["shape"] = list(image.pixel_data.shape)
    return fields


@dataclass(frozen=True, slots=True)
class StagedFrame:
    """One frame on disk in the staging area, with what its sidecar says."""

    image_id: str
    series: str
    path: Path
    sidecar: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WrittenSeries:
    """What :meth:`SeriesWriter.finalize` wrote."""

    series: str
    layout: str  # "volume" or "frames"
    frames: int
    manifest: Path
    data: Path  # the .npy volume or .nii.gz file, or the directory of per-frame files
    format: str = "npy"


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """A series manifest's content, or None if the file is not one of ours (or unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("image_ids"), list):
        return data
    return None


def manifests(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every series manifest under ``root`` (complete series), by file name."""
    for path in sorted(root.glob("*.json")):
        data = _read_manifest(path)
        if data is not None:
            yield path, data


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _atomic_npy(path: Path, array: np.ndarray[Any, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as file:
            np.save(file, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """Shape and dtype of an .npy file, from its header alone."""
    with path.open("rb") as file:
        version = np.lib.format.read_magic(file)
        read = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(file)
    return tuple(shape), dtype


def _checked(frames: list[StagedFrame], dtype: np.dtype[Any]) -> Iterator[np.ndarray[Any, Any]]:
    """Each staged frame's pixels, in order, as ``dtype`` (memory: one frame); a frame
    whose values do not fit ``dtype`` raises MetadataError naming it."""
    from ..volume import cast_problem  # on first use, as loader.py does (it imports pydicom)

    for frame in frames:
        pixels = np.load(frame.path, allow_pickle=False)
        problem = cast_problem(pixels, dtype)
        if problem is not None:
            raise MetadataError(
                f"the {pixels.dtype} frame does not fit the {dtype} series "
                f"{frame.series}: {problem} (the dtype a volume of the series gets, "
                "from its metadata); its frames stay staged",
                image_id=frame.image_id,
            )
        yield np.ascontiguousarray(pixels, dtype=dtype)


def _write_volume(
    path: Path, frames: list[StagedFrame], shape: tuple[int, ...], dtype: np.dtype[Any]
) -> None:
    """Stack staged frames into one .npy file of ``dtype`` (see :func:`_checked`);
    nothing is written if a frame does not fit."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    try:
        with tmp.open("wb") as out:
            np.lib.format.write_array_header_1_0(out, header)
            for pixels in _checked(frames, dtype):
                out.write(pixels.data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _dtype_modules(frame: StagedFrame) -> dict[str, Any] | None:
    """The modules :func:`volume_dtype` reads, rebuilt from a frame's sidecar (None if
    it has no usable ``imagePixelModule``)."""
    from ..volume import DTYPE_MODULES

    stored = frame.sidecar.get("modules")
    if not isinstance(stored, Mapping):
        return None
    modules: dict[str, Any] = {}
    for name in DTYPE_MODULES:
        value = stored.get(name)
        if not isinstance(value, Mapping):
            continue
        module_type = MODULE_TYPES[name]
        names = {f.name for f in dataclasses.fields(module_type)}
        try:
            modules[name] = module_type(**{k: v for k, v in value.items() if k in names})
        except TypeError:  # a required field is missing: as if there were no module
            continue
    return modules if isinstance(modules.get("imagePixelModule"), ImagePixelModule) else None


def _prescale(frames: list[StagedFrame]) -> bool:
    """Whether the frames were decoded with the modality LUT (their Image's ``prescale``)."""
    records = [f.sidecar.get("image", {}).get("prescale") or {} for f in frames]
    enabled = {bool(r.get("enabled", True)) for r in records}
    if len(enabled) > 1 and any(r.get("scaled") for r in records):
        raise MetadataError(
            "frames staged with and without the modality LUT (prescale): the series mixes "
            "stored and scaled values; delete its staging folder to load it again",
            image_id=frames[0].image_id,
        )
    return True in enabled


def _series_dtype(frames: list[StagedFrame], dtypes: list[np.dtype[Any]]) -> np.dtype[Any]:
    """The dtype of a series' volume: :func:`~imageloader.volume.volume_dtype` of the
    frames' metadata (see the module's docstring), or their common type where a
    frame has no pixel module."""
    from ..volume import volume_dtype

    modules = [_dtype_modules(f) for f in frames]
    if any(m is None for m in modules):
        return np.result_type(*dtypes)
    return volume_dtype(*(m for m in modules if m is not None), prescale=_prescale(frames))


def _fallback_order(frame: StagedFrame) -> tuple[float, float, str]:
    modules = frame.sidecar.get("modules", {})
    number = (modules.get("generalImageModule") or {}).get("instance_number")
    frame_number = (modules.get("multiframeModule") or {}).get("frame_number")
    return (
        float(number) if isinstance(number, int | float) else float("inf"),
        float(frame_number) if isinstance(frame_number, int | float) else 0.0,
        frame.image_id,
    )


class SeriesWriter:
    """Stages frames and assembles complete series under one output directory, in one
    of :data:`FORMATS`: ``"npy"`` (the default) or ``"nifti"`` (see the module's
    docstring and :mod:`imageloader.output.nifti`)."""

    def __init__(self, root: str | os.PathLike[str], *, format: str = "npy") -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown output format {format!r}: one of {', '.join(FORMATS)}")
        if format == "nifti" and importlib.util.find_spec("nibabel") is None:
            raise ModuleNotFoundError(
                "the NIfTI output needs nibabel: pip install 'imageloader[nifti]'",
                name="nibabel",
            )
        self.root = Path(root)
        self.format = format
        self.staging = self.root / STAGING
        self.staging.mkdir(parents=True, exist_ok=True)

    # -- what is already on disk ---------------------------------------------------------
    def manifest_path(self, series: str) -> Path:
        """Where a series' manifest goes (it exists once the series is complete)."""
        return self.root / f"{series}.json"

    def complete(self) -> dict[str, str]:
        """imageId → series of every frame in a series complete in this format (a series
        written in another format is not: finalizing it again is a conflict)."""
        done: dict[str, str] = {}
        for manifest, data in manifests(self.root):
            if data.get("format", "npy") == self.format:
                done.update(dict.fromkeys(map(str, data["image_ids"]), manifest.stem))
        return done

    def staged(self, series: str | None = None) -> Iterator[StagedFrame]:
        """The frames staged (for one series, or all); a frame without its sidecar is not."""
        if not self.staging.is_dir():  # removed by remove_empty_staging: nothing staged
            return
        folders = [self.staging / series] if series else sorted(self.staging.iterdir())
        for folder in folders:
            if not folder.is_dir():
                continue
            for sidecar_path in sorted(folder.glob("*.json")):
                npy = sidecar_path.with_suffix(".npy")
                try:
                    sidecar = json.loads(sidecar_path.read_text())
                except (OSError, ValueError):
                    continue
                if npy.is_file() and isinstance(sidecar, dict) and "image_id" in sidecar:
                    yield StagedFrame(str(sidecar["image_id"]), folder.name, npy, sidecar)

    # -- writing -------------------------------------------------------------------------
    def stage(self, image: Image, modules: Mapping[str, Any]) -> str:
        """Write one frame and its sidecar to the staging area; returns its series."""
        series = series_key(modules)
        folder = self.staging / series
        folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1(image.image_id.encode(), usedforsecurity=False).hexdigest()[:24]
        _atomic_npy(folder / f"{name}.npy", image.pixel_data)
        sidecar = {
            "image_id": image.image_id,
            "image": image_fields(image),
            "modules": module_to_json(dict(modules)),
        }
        _atomic_write(folder / f"{name}.json", json.dumps(sidecar).encode())
        return series

    def finalize(self, series: str) -> WrittenSeries:
        """Assemble a series from its staged frames, write its manifest, drop the staging.

        Raises :class:`OutputConflictError` if the series is already complete on disk
        with other imageIds or in another format (nothing is overwritten), and
        MetadataError if its frames cannot be written (its frames stay staged).
        """
        frames = sorted(self.staged(series), key=_fallback_order)
        if not frames:
            raise MetadataError(f"no staged frames for series {series}")
        ids = [f.image_id for f in frames]
        manifest = self.manifest_path(series)
        if manifest.exists():
            previous = _read_manifest(manifest) or {}
            if set(map(str, previous.get("image_ids", []))) != set(ids):
                raise OutputConflictError(
                    f"series {series} is already complete in {self.root} with other frames; "
                    f"delete {manifest.name} and its data to rebuild it",
                    image_id=ids[0],
                )
            if previous.get("format", "npy") != self.format:
                raise OutputConflictError(
                    f"series {series} is already complete in {self.root} as "
                    f"{previous.get('format', 'npy')}; write {self.format} to another "
                    "directory",
                    image_id=ids[0],
                )
        frames, geometry, unplaced = self._scan_order(frames)
        headers = [_npy_header(f.path) for f in frames]
        same_shape = len({shape for shape, _ in headers}) == 1
        dtype = _series_dtype(frames, [d for _, d in headers]) if same_shape else None
        nifti: dict[str, Any] | None = None
        files = None
        if self.format == "nifti":
            data = self.root / f"{series}.nii.gz"
            nifti = self._write_nifti(data, frames, headers, dtype, geometry, unplaced)
        elif dtype is not None:
            data = self.root / f"{series}.npy"
            _write_volume(data, frames, (len(frames), *headers[0][0]), dtype)
        else:
            data = self.root / series
            data.mkdir(exist_ok=True)
            files = [f"{series}/{index:04d}.npy" for index in range(len(frames))]
            for frame, name in zip(frames, files, strict=True):
                shutil.copyfile(frame.path, self.root / name)  # staging is dropped below
        layout = "volume" if same_shape else "frames"
        document: dict[str, Any] = {
            "series": series,
            "format": self.format,
            "layout": layout,
            "file": None if files else data.name,
            "shape": [len(frames), *headers[0][0]] if same_shape else None,
            "dtype": None if dtype is None else str(dtype),
            "files": files,
            "geometry": geometry,
            "nifti": nifti,
            "image_ids": [f.image_id for f in frames],
            "frames": [
                {
                    "image_id": f.image_id,
                    "image": f.sidecar["image"],
                    "modules": f.sidecar["modules"],
                }
                for f in frames
            ],
        }
        _atomic_write(manifest, json.dumps(document, indent=1).encode())
        shutil.rmtree(self.staging / series, ignore_errors=True)
        return WrittenSeries(series, layout, len(frames), manifest, data, self.format)

    @staticmethod
    def _write_nifti(
        path: Path,
        frames: list[StagedFrame],
        headers: list[tuple[tuple[int, ...], np.dtype[Any]]],
        dtype: np.dtype[Any] | None,
        geometry: dict[str, Any] | None,
        unplaced: str | None,
    ) -> dict[str, Any]:
        """Write the series as one NIfTI file; its header, described for the manifest."""
        from .nifti import nifti_layout, write_nifti

        first = frames[0].image_id
        if dtype is None:
            sizes = sorted({"x".join(map(str, shape)) for shape, _ in headers})
            raise MetadataError(
                f"series {frames[0].series} has frames of several sizes ({', '.join(sizes)}): "
                "not one NIfTI volume (--format npy writes them frame by frame)",
                image_id=first,
            )
        if unplaced is not None:
            raise MetadataError(
                f"series {frames[0].series} is not one NIfTI volume: {unplaced}", image_id=first
            )
        modules = [f.sidecar.get("modules", {}) for f in frames]
        try:
            layout = nifti_layout(
                modules,
                lambda: _checked(frames, dtype),
                headers[0][0],
                dtype,
                placed=geometry is not None,
            )
        except MetadataError as exc:
            raise MetadataError(exc.message, image_id=exc.image_id or first) from None
        write_nifti(path, _checked(frames, dtype), layout)
        return layout.describe()

    @staticmethod
    def complete_ids_of(manifest: Path) -> list[str]:
        """The imageIds a manifest lists."""
        data = _read_manifest(manifest)
        return [str(i) for i in data["image_ids"]] if data else []

    @staticmethod
    def _scan_order(
        frames: list[StagedFrame],
    ) -> tuple[list[StagedFrame], dict[str, Any] | None, str | None]:
        """Frames sorted along the scan axis, the geometry (None if they do not form
        one), and why they do not where their plane metadata says they cannot (frames
        without positions have no geometry and no problem: nothing places them).

        Without a geometry the fallback order (instance, frame number) stays; the sort
        is stable, so frames at one position (a cine) keep it too.
        """
        planes: dict[str, ImagePlaneModule] = {}
        for frame in frames:
            plane = frame.sidecar["modules"].get("imagePlaneModule")
            if not isinstance(plane, dict) or plane.get("image_position_patient") is None:
                return frames, None, None
            try:
                planes[frame.image_id] = ImagePlaneModule(**plane)
            except TypeError:
                return frames, None, None
        try:
            geometry = slice_geometry(planes)
        except MetadataError as exc:
            return frames, None, exc.message
        by_id = {f.image_id: f for f in frames}
        described = {
            "origin": list(geometry.origin),
            "spacing": list(geometry.spacing),
            "direction": list(geometry.direction),
            "positions": list(geometry.positions),
            "regular": geometry.regular,
        }
        ordered = [by_id[i] for i in geometry.image_ids]
        gaps = np.diff(geometry.positions)
        if len(gaps) and float(np.min(gaps)) < 1e-3:
            stacked = int(np.sum(gaps < 1e-3)) + 1
            return (
                ordered,
                described,
                (
                    f"{stacked} frames share a position along the scan axis (a time series or "
                    "repeated slices?)"
                ),
            )
        return ordered, described, None

    def remove_empty_staging(self) -> bool:
        """Remove the staging area if it holds no frames; returns whether it is gone.

        Empty series folders go first. Staged frames (a series held back by a failure,
        or a run interrupted) are kept: they are what a rerun resumes from. Call it when
        nothing stages any more (at the end of a run): a frame staged meanwhile would be
        lost (never torn), and loaded again by the next run.
        """
        try:
            folders = [p for p in self.staging.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return True
        for folder in folders:
            with contextlib.suppress(OSError):  # not empty: frames are staged there
                folder.rmdir()
        try:
            self.staging.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True

    def clean_temporaries(self) -> int:
        """Remove temporary files an interrupted run left; returns how many."""
        removed = 0
        for tmp in [*self.root.glob(".*.tmp"), *self.staging.glob("*/.*.tmp")]:
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed
