"""``index.csv``: one row per series written under an output directory.

A dataset's table of contents, for the loaders of ML pipelines (pandas, MONAI's
``CSVDataset``): rebuilt from the series' manifests at the end of every run, so it
lists what earlier runs wrote too, and only series that are complete.

Columns (:data:`COLUMNS`): ``file`` (the volume, relative to the output directory;
for frames of several sizes, their folder), ``format``, ``study_instance_uid``,
``series_instance_uid``, ``modality``, ``series_number``, ``frames``, ``shape``
(the file's array: ``(slices, rows, columns)`` for ``.npy``, ``(columns, rows,
slices)`` for NIfTI; ``x``-separated), ``dtype`` (the voxel values'), ``spacing``
(mm along the file's axes, ``x``-separated; empty where the frames have no
geometry) and ``manifest``.

Attributes that identify a patient or hold free text are written only when asked
for (``include_phi``, the CLI's ``--include-phi``): :data:`PHI_COLUMNS`, from the
first frame's ``patientModule``, ``patientStudyModule`` and ``generalSeriesModule``.
UIDs are not in that set; a dataset that must not carry them de-identifies before
it is fetched. The manifests themselves keep every frame's metadata modules, as
loaded: share the index, not the output directory, when PHI matters.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .writer import manifests

__all__ = ["COLUMNS", "INDEX", "PHI_COLUMNS", "index_rows", "write_index"]

INDEX = "index.csv"
COLUMNS = (
    "file",
    "format",
    "study_instance_uid",
    "series_instance_uid",
    "modality",
    "series_number",
    "frames",
    "shape",
    "dtype",
    "spacing",
    "manifest",
)
#: (column, module, field): written only with ``include_phi``.
_PHI = (
    ("patient_id", "patientModule", "patient_id"),
    ("patient_name", "patientModule", "patient_name"),
    ("patient_birth_date", "patientModule", "patient_birth_date"),
    ("patient_sex", "patientStudyModule", "patient_sex"),
    ("patient_age", "patientStudyModule", "patient_age"),
    ("study_date", "patientStudyModule", "study_date"),
    ("study_description", "patientStudyModule", "study_description"),
    ("series_description", "generalSeriesModule", "series_description"),
)
PHI_COLUMNS = tuple(column for column, _, _ in _PHI)


def _joined(values: Any) -> str:
    if not isinstance(values, list | tuple) or not values:
        return ""
    return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _row(manifest: Path, data: Mapping[str, Any], include_phi: bool) -> dict[str, str]:
    frames = data.get("frames") or [{}]
    modules = frames[0].get("modules") or {}
    series = modules.get("generalSeriesModule") or {}
    fmt = str(data.get("format", "npy"))
    nifti = data.get("nifti") or {}
    geometry = data.get("geometry") or {}
    shape = nifti.get("shape") if fmt == "nifti" else data.get("shape")
    if fmt == "nifti":
        spacing = nifti.get("zooms")
    else:  # (slices, rows, columns): the geometry's (x, y, z) reversed
        spacing = list(reversed(geometry.get("spacing") or [])) or None
    file = data.get("file") or (str(data.get("series", manifest.stem)) + "/")
    row = {
        "file": str(file),
        "format": fmt,
        "study_instance_uid": _text(series.get("study_instance_uid")),
        "series_instance_uid": _text(series.get("series_instance_uid")),
        "modality": _text(series.get("modality")),
        "series_number": _text(series.get("series_number")),
        "frames": str(len(data.get("image_ids", []))),
        "shape": _joined(shape),
        "dtype": _text(data.get("dtype")),
        "spacing": _joined(spacing),
        "manifest": manifest.name,
    }
    if include_phi:
        for column, module, field in _PHI:
            row[column] = _text((modules.get(module) or {}).get(field))
    return row


def index_rows(root: str | os.PathLike[str], *, include_phi: bool = False) -> list[dict[str, str]]:
    """The index's rows for the series complete under ``root``, by manifest name."""
    return [_row(path, data, include_phi) for path, data in manifests(Path(root))]


def write_index(root: str | os.PathLike[str], *, include_phi: bool = False) -> Path:
    """Write ``root/index.csv`` (atomically) from the manifests there; returns its path."""
    root = Path(root)
    columns = [*COLUMNS, *(PHI_COLUMNS if include_phi else ())]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(index_rows(root, include_phi=include_phi))
    path = root / INDEX
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text.getvalue(), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
