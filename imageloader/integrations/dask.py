"""Dask: a series as a lazy dask array, and bulk prefetch spread over a cluster.

::

    from distributed import Client
    from imageloader.integrations.dask import load_series_dask, prefetch_many

    with Client("tcp://scheduler:8786") as client:
        volume = load_series_dask(image_ids, batch_size=8)      # lazy: (n, rows, columns)
        mean = volume.mean().compute()
        report = prefetch_many(image_ids, client=client, output="/shared/out")

**One loader per worker process, not per task.** A task asks :func:`process_loader`
for the process's :class:`~imageloader.ImageLoader` (one per distinct set of loader
options). It is created on first use, on an event loop that runs in a daemon thread
of its own, so the Dask worker's threads all share its HTTP session, cache and
in-flight table (a frame asked for by two tasks is fetched once). It is closed when
the process exits (``atexit``), or on demand with ``client.run(close_process_loaders)``.
Decoding happens in the worker process itself (``max_web_workers=0`` by default):
Dask's processes are the pool, and daemonic Dask workers cannot have children anyway.

``prefetch_many`` writes the layout of :mod:`imageloader.output` (the ``--output`` of
``imageloader prefetch``): workers stage frames under ``output`` and the series
are assembled by tasks too, so ``output`` must be a path every worker and the
client can reach (a local disk for a ``LocalCluster``, a shared filesystem otherwise).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.delayed import delayed

from ..errors import ImageLoaderError
from ..output import (
    PrefetchReport,
    ProgressCallback,
    SeriesTracker,
    SeriesWriter,
    describe_error,
    plan_resume,
)
from ._dask_worker import (
    DEFAULT_LOADER_OPTIONS,
    BatchResult,
    close_process_loaders,
    finalize,
    load_frames,
    prefetch_batch,
    probe,
    process_loader,
)
from ._dask_worker import loader_options as _defaults

__all__ = [
    "DEFAULT_LOADER_OPTIONS",
    "close_process_loaders",
    "load_series_dask",
    "prefetch_many",
    "process_loader",
]


# -- the client side ---------------------------------------------------------------------
def _batches(ids: Sequence[str], size: int) -> list[tuple[str, ...]]:
    size = max(1, size)
    return [tuple(ids[i : i + size]) for i in range(0, len(ids), size)]


def load_series_dask(
    image_ids: Iterable[str],
    *,
    batch_size: int = 1,
    shape: Sequence[int] | None = None,
    dtype: str | np.dtype[Any] | None = None,
    loader_options: Mapping[str, Any] | None = None,
) -> da.Array:
    """A lazy ``(n, rows, columns[, components])`` array of the frames, in the order given.

    Each chunk is ``batch_size`` frames, loaded by a task through its worker's
    :func:`process_loader`. Without ``shape`` and ``dtype`` the first frame is loaded
    once (on the current Dask scheduler) to learn them; frames of another size fail
    the chunk with :class:`~imageloader.errors.MetadataError`. Sort the imageIds first
    (``imageloader.geometry.slice_geometry``) for a volume in scan order.
    """
    ids = list(image_ids)
    if not ids:
        raise ValueError("load_series_dask needs at least one imageId")
    options = _defaults(loader_options)
    if shape is None or dtype is None:
        probed_shape, probed_dtype = delayed(probe, pure=True)(ids[0], options).compute()
        shape = probed_shape if shape is None else shape
        dtype = probed_dtype if dtype is None else dtype
    frame_shape = tuple(int(n) for n in shape)
    dtype_str = np.dtype(dtype).str
    chunks: list[da.Array] = [
        da.from_delayed(  # type: ignore[no-untyped-call]
            delayed(load_frames, pure=True)(batch, options, frame_shape, dtype_str),
            shape=(len(batch), *frame_shape),
            dtype=np.dtype(dtype_str),
        )
        for batch in _batches(ids, batch_size)
    ]
    if len(chunks) == 1:
        return chunks[0]
    volume: da.Array = da.concatenate(chunks, axis=0)  # type: ignore[no-untyped-call]
    return volume


def prefetch_many(
    image_ids: Iterable[str],
    *,
    client: Any,
    output: str | os.PathLike[str] | None = None,
    batch_size: int = 8,
    loader_options: Mapping[str, Any] | None = None,
    series_of: Mapping[str, str | None] | None = None,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> PrefetchReport:
    """Prefetch ``image_ids`` on a ``distributed`` cluster; gather results and failures.

    Batches of ``batch_size`` imageIds go to the workers; with ``output`` each frame is
    staged there and each series assembled (by a task) once all its frames are in,
    skipping what a previous run completed, as :func:`imageloader.output.prefetch`
    does on one machine. ``series_of`` (imageId → series key, e.g. from DICOMweb
    metadata the caller registered) lets series be written before the whole run ends.
    Setting ``stop`` cancels what is still queued and returns (``report.interrupted``).
    """
    ids = list(dict.fromkeys(image_ids))
    report = PrefetchReport(total=len(ids))
    root = str(Path(output).resolve()) if output is not None else None
    options = _defaults(loader_options)
    tracker: SeriesTracker | None = None
    writing: list[tuple[str, Any]] = []
    if root is not None:
        plan = plan_resume(SeriesWriter(root), ids, dict(series_of or {}))
        ids, tracker = plan.to_load, plan.tracker
        report.skipped, report.resumed = plan.skipped, len(plan.resumed)
        writing += _submit_finalize(client, root, plan.ready)
    pending = {
        client.submit(prefetch_batch, batch, root, options, pure=False): batch
        for batch in _batches(ids, batch_size)
    }
    if progress is not None:
        progress(report)
    try:
        while pending:
            if stop is not None and stop.is_set():
                report.interrupted = True
                break
            done = [f for f in pending if f.done()]
            if not done:
                time.sleep(0.05)  # client-side thread, not an event loop
                continue
            for future in done:
                batch = pending.pop(future)
                for image_id, series, nbytes, error in _batch_results(future, batch):
                    if error is None:
                        report.loaded += 1
                        report.bytes += nbytes
                        if series is not None:
                            report.image_series[image_id] = series
                    else:
                        report.failures[image_id] = describe_error(error)
                        report.errors[image_id] = error
                    if tracker is not None:
                        ready = tracker.settled(image_id, series, error is None)
                        writing += _submit_finalize(client, root, ready)
                if progress is not None:
                    progress(report)
    finally:
        for future in pending:
            future.cancel()
        for series, future in writing:
            _collect_written(series, future, report)
        if tracker is not None:
            report.held = sorted(tracker.held)
        report.finished = time.monotonic()
    if progress is not None:
        progress(report)
    return report


def _submit_finalize(client: Any, root: str | None, ready: list[str]) -> list[tuple[str, Any]]:
    if root is None:
        return []
    return [(series, client.submit(finalize, root, series, pure=False)) for series in ready]


def _batch_results(future: Any, batch: tuple[str, ...]) -> list[BatchResult]:
    try:
        results: list[BatchResult] = future.result()
        return results
    except ImageLoaderError as exc:
        return [(i, None, 0, exc.for_image(i)) for i in batch]
    except Exception as exc:  # a worker died or the task could not run: every frame failed
        error = ImageLoaderError(f"Dask task failed: {type(exc).__name__}: {exc}")
        return [(i, None, 0, error.for_image(i)) for i in batch]


def _collect_written(series: str, future: Any, report: PrefetchReport) -> None:
    try:
        report.written.append(future.result())
    except Exception as exc:
        # The series' frames stay staged for a later run; say so rather than drop it.
        report.failures[f"series:{series}"] = describe_error(exc)
