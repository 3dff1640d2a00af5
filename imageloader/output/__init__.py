"""Bulk prefetch to disk, in the layout ML pipelines read: one ``.npy`` volume per series.

- :func:`prefetch` / :class:`PrefetchJob`: the prefetch engine. It loads many imageIds
  at PREFETCH priority, staging frames and writing each series when it is complete,
  resuming what an earlier run left, into one :class:`PrefetchReport`. Where it loads
  and writes is its :class:`PrefetchBackend`: an ImageLoader on this machine
  (:class:`LocalBackend`), or a Dask cluster's workers
  (:func:`imageloader.integrations.dask.prefetch_many`).
- :class:`SeriesWriter`: the on-disk format (staging, volumes, manifests).
"""

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
    NO_SERIES,
    OutputConflictError,
    SeriesWriter,
    StagedFrame,
    WrittenSeries,
    image_fields,
    series_key,
)

__all__ = [
    "NO_SERIES",
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
    "plan_resume",
    "prefetch",
    "series_key",
]
