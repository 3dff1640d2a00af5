"""Bulk prefetch to disk, in the layout ML pipelines read: one ``.npy`` volume per series.

- :func:`prefetch` / :class:`PrefetchJob`: load many imageIds at PREFETCH priority on
  one machine, staging frames and writing each series when it is complete.
- :class:`SeriesWriter`: the on-disk format (staging, volumes, manifests), shared
  with the Dask integration, whose workers stage and whose client assembles.
"""

from .prefetch import PrefetchJob, PrefetchReport, ProgressCallback, describe_error, prefetch
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
    "OutputConflictError",
    "PrefetchJob",
    "PrefetchReport",
    "ProgressCallback",
    "ResumePlan",
    "SeriesTracker",
    "SeriesWriter",
    "StagedFrame",
    "WrittenSeries",
    "describe_error",
    "image_fields",
    "plan_resume",
    "prefetch",
    "series_key",
]
