"""Bulk prefetch to disk, in the layout ML pipelines read: one ``.npy`` or NIfTI volume
per series, its JSON manifest, and ``index.csv``.

- :func:`prefetch` / :class:`PrefetchJob`: the prefetch engine. It loads many imageIds
  at PREFETCH priority, staging frames and writing each series when it is complete,
  resuming what an earlier run left, into one :class:`PrefetchReport`. Where it loads
  and writes is its :class:`PrefetchBackend`: an ImageLoader on this machine
  (:class:`LocalBackend`), or a Dask cluster's workers
  (:func:`imageloader.integrations.dask.prefetch_many`).
- :class:`SeriesWriter`: the on-disk format (staging, volumes, manifests); NIfTI in
  :mod:`.nifti`, the dataset index (``index.csv``) in :mod:`.index`.
"""

from .index import COLUMNS, INDEX, PHI_COLUMNS, index_rows, write_index
from .prefetch import (
    LocalBackend,
    PrefetchBackend,
    PrefetchJob,
    PrefetchReport,
    ProgressCallback,
    SettledLoad,
    describe_error,
    prefetch,
)
from .tracker import ResumePlan, SeriesTracker, plan_resume
from .writer import (
    FORMATS,
    NO_SERIES,
    OutputConflictError,
    SeriesWriter,
    StagedFrame,
    WrittenSeries,
    image_fields,
    manifests,
    series_key,
)

__all__ = [
    "COLUMNS",
    "FORMATS",
    "INDEX",
    "NO_SERIES",
    "PHI_COLUMNS",
    "LocalBackend",
    "OutputConflictError",
    "PrefetchBackend",
    "PrefetchJob",
    "PrefetchReport",
    "ProgressCallback",
    "ResumePlan",
    "SeriesTracker",
    "SeriesWriter",
    "SettledLoad",
    "StagedFrame",
    "WrittenSeries",
    "describe_error",
    "image_fields",
    "index_rows",
    "manifests",
    "plan_resume",
    "prefetch",
    "series_key",
    "write_index",
]
