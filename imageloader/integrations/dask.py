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
options). It is created on first use, on an event loop in a thread of its own
(AnyIO's blocking portal), so the Dask worker's threads all share its HTTP session, cache and
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

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from concurrent import futures
from functools import partial
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from anyio.from_thread import start_blocking_portal
from dask.delayed import delayed
from distributed import as_completed

from ..errors import ImageLoaderError
from ..output import (
    PrefetchBackend,
    PrefetchJob,
    PrefetchReport,
    ProgressCallback,
    SeriesWriter,
    SettledLoad,
    WrittenSeries,
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
    :func:`process_loader`. Without ``shape`` and ``dtype``, one task (on the current
    Dask scheduler) learns them first: the shape from the first frame, loaded once,
    and the dtype a volume of these images gets
    (:func:`imageloader.volume.volume_dtype` of every frame's metadata, headers
    only; a frame whose metadata cannot be had fails it then, as it fails
    ``create_and_cache_volume``), so this array, a volume and a prefetch's ``.npy``
    are one array. Only for a scheme without a metadata loader is it the first frame's.

    Each frame is copied in only if its values fit the dtype (a narrower one, say a
    dark slice of a 16-bit series, is cast exactly); nothing is wrapped, clipped or
    truncated: frames of another size, or whose values do not fit, fail the chunk with
    :class:`~imageloader.errors.MetadataError` naming the imageId. ``dtype`` must be a
    native integer or floating type (else ``ValueError``). Sort the imageIds first
    (``imageloader.geometry.slice_geometry``) for a volume in scan order.
    """
    ids = list(image_ids)
    if not ids:
        raise ValueError("load_series_dask needs at least one imageId")
    if dtype is not None:
        wanted = np.dtype(dtype)
        if wanted.kind not in "iuf" or not wanted.isnative:
            raise ValueError(
                f"load_series_dask: dtype must be a native-order integer or floating type, "
                f"not {wanted}"
            )
    options = _defaults(loader_options)
    if shape is None or dtype is None:
        probed_shape, probed_dtype = delayed(probe, pure=True)(tuple(ids), options).compute()
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
    format: str = "npy",
    include_phi: bool = False,
    batch_size: int = 8,
    loader_options: Mapping[str, Any] | None = None,
    series_of: Mapping[str, str | None] | None = None,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> PrefetchReport:
    """Prefetch ``image_ids`` on a ``distributed`` cluster; gather results and failures.

    Batches of ``batch_size`` imageIds go to the workers; with ``output`` each frame is
    staged there and each series assembled (by a task) once all its frames are in,
    skipping what a previous run completed, in ``format`` (``"npy"`` or ``"nifti"``,
    see :class:`~imageloader.output.SeriesWriter`), with ``index.csv`` at the end
    (``include_phi``: see :mod:`imageloader.output.index`). It is
    :func:`imageloader.output.prefetch`'s engine
    (:class:`~imageloader.output.PrefetchJob`, on an event loop in a thread of its
    own) with the loading and writing done by the workers, so the report is the same:
    counts, per-image ``outcomes``, failures with their errors, series written,
    held or failed; an empty staging area is removed. ``series_of`` (imageId → series
    key, e.g. from DICOMweb metadata the caller registered) lets series be written
    before the whole run ends. Setting ``stop`` cancels what is still queued, finishes
    the series being written and returns (``report.interrupted``).

    As for the local engine, no ``image_ids`` is an empty report (nothing to do, no
    task submitted). A DICOMweb study or series with no instances never gets here:
    :func:`imageloader.dicomweb.image_ids_for_study` (``_for_series``) raises
    :class:`~imageloader.errors.NotFoundError` naming it.
    """
    backend = _DaskBackend(
        client, batch_size=batch_size, options=_defaults(loader_options), series_of=series_of
    )
    root = Path(output).resolve() if output is not None else None
    job = PrefetchJob(
        backend,
        image_ids,
        output=root,
        format=format,
        include_phi=include_phi,
        progress=progress,
    )
    with start_blocking_portal(name="imageloader-prefetch") as portal:
        task = portal.call(_start, job)
        finished = portal.start_task_soon(_settle, task)
        if stop is not None:
            # A threading.Event wakes nobody: look at it between waits for the job.
            while not futures.wait([finished], timeout=_STOP_CHECK_SECONDS).done:
                if stop.is_set():
                    portal.call(task.cancel)  # the job then finishes its writes
                    break
        finished.result()
    return job.report


#: How often :func:`prefetch_many` looks at its ``stop`` event while the job runs.
_STOP_CHECK_SECONDS = 0.1


async def _start(job: PrefetchJob) -> asyncio.Task[PrefetchReport]:
    return asyncio.ensure_future(job.run())


async def _settle(task: asyncio.Task[PrefetchReport]) -> None:
    """Wait for ``task``: cancelled (``stop``), its report says so; an error is raised."""
    await asyncio.wait([task])
    if not task.cancelled():
        task.result()


class _DaskBackend(PrefetchBackend):
    """Loads and writes in the cluster's workers, for :class:`~imageloader.output.PrefetchJob`.

    Every task this submits goes into one ``distributed.as_completed`` (with results,
    gathered on the client's loop), drained by one thread while any is outstanding;
    each result goes to whoever waits for it on the job's event loop.
    """

    def __init__(
        self,
        client: Any,
        *,
        batch_size: int,
        options: Mapping[str, Any],
        series_of: Mapping[str, str | None] | None,
    ) -> None:
        self._client = client
        self._batch_size = batch_size
        self._options = options
        self._series_of = dict(series_of or {})
        self._completed = as_completed(  # type: ignore[no-untyped-call]
            loop=client.loop, with_results=True, raise_errors=False
        )
        self._waiting: dict[Any, Callable[[Any, Exception | None], None]] = {}
        self._drain: asyncio.Task[None] | None = None

    def known_series(self, image_id: str) -> str | None:
        return self._series_of.get(image_id)

    async def load(
        self, image_ids: Sequence[str], writer: SeriesWriter | None
    ) -> AsyncGenerator[SettledLoad, None]:
        root = str(writer.root) if writer is not None else None  # resolved by prefetch_many
        batches = _batches(image_ids, self._batch_size)
        queue: asyncio.Queue[list[BatchResult]] = asyncio.Queue()
        # Submitting thousands of tasks takes a while: not on the event loop.
        submitted = await asyncio.to_thread(self._submit_batches, batches, root)
        for future, batch in zip(submitted, batches, strict=True):
            self._expect(future, partial(_put_batch, queue, batch))
        try:
            for _ in batches:
                for result in await queue.get():
                    yield SettledLoad(*result)
        finally:
            # Interrupted (or done): cancel what is still queued.
            left = [f for f in submitted if f in self._waiting]
            if left:
                await asyncio.to_thread(self._client.cancel, left)

    def _submit_batches(self, batches: list[tuple[str, ...]], root: str | None) -> list[Any]:
        submit = self._client.submit
        return [submit(prefetch_batch, b, root, self._options, pure=False) for b in batches]

    async def finalize(self, writer: SeriesWriter, series: str) -> WrittenSeries:
        written: asyncio.Future[WrittenSeries] = asyncio.get_running_loop().create_future()

        def settle(value: Any, error: Exception | None) -> None:
            if written.done():  # the caller is gone
                return
            if error is None:
                written.set_result(value)
            else:
                written.set_exception(error)

        root = str(writer.root)
        future = self._client.submit(finalize, root, series, writer.format, pure=False)
        self._expect(future, settle)
        return await written

    async def aclose(self) -> None:
        if self._waiting:  # cancelled tasks still to come back from the client
            await asyncio.to_thread(self._client.cancel, list(self._waiting))
        if self._drain is not None:
            await self._drain

    def _expect(self, future: Any, settle: Callable[[Any, Exception | None], None]) -> None:
        """Call ``settle(result, error)`` on this loop when ``future`` is done."""
        self._waiting[future] = settle
        self._completed.add(future)  # type: ignore[no-untyped-call]
        if self._drain is None or self._drain.done():
            self._drain = asyncio.ensure_future(self._drain_completed())

    async def _drain_completed(self) -> None:
        try:
            while self._waiting:
                for future, result in await asyncio.to_thread(_next_completed, self._completed):
                    settle = self._waiting.pop(future, None)
                    if settle is not None:
                        settle(*_outcome(future, result))
        except Exception as exc:  # the client failed: nothing more will come back
            waiting, self._waiting = self._waiting, {}
            for settle in waiting.values():
                settle(None, exc)


def _next_completed(completed: Any) -> list[tuple[Any, Any]]:
    """The next futures done, with their results (blocks: call it from a thread)."""
    try:
        batch: list[tuple[Any, Any]] = completed.next_batch(block=True)
    except StopIteration:  # nothing outstanding
        return []
    return batch


def _outcome(future: Any, result: Any) -> tuple[Any, Exception | None]:
    """``(value, None)`` or ``(None, error)`` of a future ``as_completed`` gave back."""
    if future.status == "finished":
        return result, None
    if isinstance(result, tuple) and len(result) == 3:  # (type, error, traceback)
        result = result[1]
    if isinstance(result, Exception):
        return None, result
    # Cancelled (by us, or as the client lost its scheduler): a CancelledError.
    return None, RuntimeError(f"Dask task {future.key} {future.status}: {result!r}")


def _put_batch(
    queue: asyncio.Queue[list[BatchResult]],
    batch: tuple[str, ...],
    value: Any,
    error: Exception | None,
) -> None:
    queue.put_nowait(value if error is None else _batch_failed(batch, error))


def _batch_failed(batch: tuple[str, ...], error: Exception) -> list[BatchResult]:
    """Every frame of a batch whose task failed (a worker died, the task could not run)."""
    if not isinstance(error, ImageLoaderError):
        error = ImageLoaderError(f"Dask task failed: {type(error).__name__}: {error}")
    return [BatchResult(i, None, 0, error.for_image(i)) for i in batch]
