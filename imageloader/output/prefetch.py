"""Bulk prefetch: load many imageIds at PREFETCH priority, optionally to disk.

::

    async with ImageLoader() as loader:
        ids = await image_ids_for_series(loader, base, study, series)
        report = await prefetch(loader, ids, output="out/")
    print(report.loaded, report.failures)

:class:`PrefetchJob` is the one prefetch engine: it skips what an earlier run
completed, resumes what it staged, tracks each series' frames as their loads settle,
writes a series as soon as it is complete, and fills the :class:`PrefetchReport`
(counts, per-image outcomes, failures with their errors, series written or held).
Where images are loaded and series written is its :class:`PrefetchBackend`: on this
machine an :class:`~imageloader.ImageLoader` (:class:`LocalBackend`), or a Dask
cluster's workers (:func:`imageloader.integrations.dask.prefetch_many`).

Loads run as a sliding window (``ImageLoader.iter_images``), so memory is what is in
flight plus, with ``output``, nothing more: each frame is staged to disk as it
arrives and a series is assembled when its last frame is in (see
:mod:`imageloader.output.writer`). Failures never stop the run; they are collected
in the report. Cancelling the run leaves a consistent output directory to resume.
"""

from __future__ import annotations

import abc
import asyncio
import os
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..image import Image
from ..request_pool import RequestType
from .index import write_index
from .tracker import SeriesTracker, plan_resume
from .writer import FORMATS, SeriesWriter, WrittenSeries, series_key

if TYPE_CHECKING:
    from ..loader import ImageLoader

__all__ = [
    "LocalBackend",
    "PrefetchBackend",
    "PrefetchJob",
    "PrefetchReport",
    "ProgressCallback",
    "SettledLoad",
    "describe_error",
    "prefetch",
]


def describe_error(error: BaseException) -> str:
    """``"NotFoundError: message"``: the error type and what it says."""
    message = getattr(error, "message", None) or str(error)
    return f"{type(error).__name__}: {message}"


@dataclass
class PrefetchReport:
    """Counts and outcomes of a prefetch, updated live while it runs."""

    total: int = 0
    #: Images loaded in this run.
    loaded: int = 0
    #: Complete on disk from an earlier run (not loaded again).
    skipped: int = 0
    #: Staged by an earlier run (not loaded again).
    resumed: int = 0
    #: imageId → "ErrorType: message", and the error itself.
    failures: dict[str, str] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    #: imageId → the series (file stem under ``output``) of each image loaded, where known.
    image_series: dict[str, str] = field(default_factory=dict)
    #: imageId → "loaded", "skipped" or "resumed" for each image settled without failure
    #: (recorded by :class:`PrefetchJob`; failures are in ``failures``).
    outcomes: dict[str, str] = field(default_factory=dict)
    written: list[WrittenSeries] = field(default_factory=list)
    #: Series not written because a frame failed (their frames stay staged).
    held: list[str] = field(default_factory=list)
    #: Decoded pixel bytes of the images loaded.
    bytes: int = 0
    #: The output's ``index.csv``, once written (at the end of a run that was not cancelled).
    index: Path | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    interrupted: bool = False

    @property
    def done(self) -> int:
        """Images settled so far (loaded, failed, skipped or resumed)."""
        return self.loaded + len(self.failures) + self.skipped + self.resumed

    @property
    def seconds(self) -> float:
        """Time since the start (until the end, once finished)."""
        return (self.finished or time.monotonic()) - self.started

    @property
    def ok(self) -> bool:
        """Everything loaded (or was there already) and the run was not interrupted."""
        return not self.failures and not self.interrupted and not self.held


ProgressCallback = Callable[[PrefetchReport], None]


class SettledLoad(NamedTuple):
    """One image's load, settled: what a :class:`PrefetchBackend` hands the engine."""

    image_id: str
    #: The series it was staged into (or, for a failure, its series if known by now).
    series: str | None
    #: Decoded pixel bytes (0 for a failure).
    nbytes: int
    #: None if it loaded (and, with an output, was staged); else why not.
    error: BaseException | None


class PrefetchBackend(abc.ABC):
    """Where a :class:`PrefetchJob` loads images and writes series.

    The job decides what to load, tracks series and fills the report; a backend
    loads (and, with an output, stages each frame with :meth:`SeriesWriter.stage`),
    and assembles a series (:meth:`SeriesWriter.finalize`) where it likes: here
    (:class:`LocalBackend`) or on a cluster's workers.
    """

    @abc.abstractmethod
    def known_series(self, image_id: str) -> str | None:
        """The series of ``image_id`` if known before it loads (None if not)."""

    @abc.abstractmethod
    def load(
        self, image_ids: Sequence[str], writer: SeriesWriter | None
    ) -> AsyncGenerator[SettledLoad, None]:
        """Load ``image_ids`` (staging each frame to ``writer`` if given), yielding each
        as it settles. Never raises for one image: its error is in its result. Closing
        the iterator early cancels what is still to load."""

    @abc.abstractmethod
    async def finalize(self, writer: SeriesWriter, series: str) -> WrittenSeries:
        """Assemble ``series`` from its staged frames (raises if it cannot)."""

    async def aclose(self) -> None:  # noqa: B027 (optional for subclasses)
        """Release what the run used (called once the job's loads and writes are done)."""


class LocalBackend(PrefetchBackend):
    """Loads with an :class:`~imageloader.ImageLoader` and writes in its threads."""

    def __init__(
        self, loader: ImageLoader, request_type: RequestType | str = RequestType.PREFETCH
    ) -> None:
        self.loader = loader
        self.request_type = RequestType(request_type)

    def known_series(self, image_id: str) -> str | None:
        modules = self.loader.metadata.modules(image_id, ("generalSeriesModule",))
        return series_key(modules) if modules else None

    async def load(
        self, image_ids: Sequence[str], writer: SeriesWriter | None
    ) -> AsyncGenerator[SettledLoad, None]:
        async for result in self.loader.iter_images(
            image_ids, request_type=self.request_type, cache=False, return_exceptions=True
        ):
            if not isinstance(result, Image):
                image_id = result.image_id or "?"
                yield SettledLoad(image_id, self.known_series(image_id), 0, result)
                continue
            modules = self.loader.metadata.modules(result.image_id)
            series = series_key(modules)
            if writer is not None:
                try:
                    series = await asyncio.to_thread(writer.stage, result, modules)
                except OSError as exc:
                    yield SettledLoad(result.image_id, series, 0, exc)
                    continue
            yield SettledLoad(result.image_id, series, result.pixel_data.nbytes, None)

    async def finalize(self, writer: SeriesWriter, series: str) -> WrittenSeries:
        return await asyncio.to_thread(writer.finalize, series)


class PrefetchJob:
    """One prefetch run; :attr:`report` stays readable if :meth:`run` is cancelled.

    ``loader`` is an :class:`~imageloader.ImageLoader` (loads here, at
    ``request_type``), or a :class:`PrefetchBackend` that loads elsewhere. No
    ``image_ids`` is an empty report, ``ok``: the job knows imageIds, not where they
    came from. A study or series with none is refused where it is listed
    (:mod:`imageloader.dicomweb` raises :class:`~imageloader.errors.NotFoundError`).
    """

    def __init__(
        self,
        loader: ImageLoader | PrefetchBackend,
        image_ids: Iterable[str],
        *,
        output: str | os.PathLike[str] | None = None,
        format: str = "npy",
        include_phi: bool = False,
        progress: ProgressCallback | None = None,
        request_type: RequestType | str = RequestType.PREFETCH,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown output format {format!r}: one of {', '.join(FORMATS)}")
        self.backend = (
            loader if isinstance(loader, PrefetchBackend) else LocalBackend(loader, request_type)
        )
        self.image_ids = list(dict.fromkeys(image_ids))  # once each, in order
        self.output = output
        self.format = format
        self.include_phi = include_phi
        self.progress = progress
        self.report = PrefetchReport(total=len(self.image_ids))
        self._writing: set[asyncio.Task[None]] = set()

    async def run(self) -> PrefetchReport:
        """Load everything; returns the report (also when some loads failed).

        Cancelled, it finishes the series being written, sets ``report.interrupted``
        and re-raises; what is still staged is what a rerun resumes from.
        """
        report = self.report
        backend = self.backend
        writer: SeriesWriter | None = None
        to_load = self.image_ids
        tracker: SeriesTracker | None = None
        try:
            if self.output is not None:
                writer = await asyncio.to_thread(SeriesWriter, self.output, format=self.format)
                known = {i: backend.known_series(i) for i in to_load}
                plan = await asyncio.to_thread(plan_resume, writer, to_load, known)
                to_load, tracker = plan.to_load, plan.tracker
                report.skipped, report.resumed = plan.skipped, len(plan.resumed)
                report.outcomes.update(dict.fromkeys(self.image_ids, "skipped"))
                report.outcomes.update(dict.fromkeys(plan.resumed, "resumed"))
                for image_id in to_load:
                    del report.outcomes[image_id]
                self._write(writer, plan.ready)
            self._tick()
            async with aclosing(backend.load(to_load, writer)) as results:
                async for settled in results:
                    self._settled(settled, writer, tracker)
                    self._tick()
        except asyncio.CancelledError:
            report.interrupted = True
            raise
        finally:
            if self._writing:
                # A series being assembled is finished, not torn (even when cancelled).
                await asyncio.wait(set(self._writing))
            await backend.aclose()
            if tracker is not None:
                report.held = sorted(tracker.held)
            report.finished = time.monotonic()
        if writer is not None:
            # Not when cancelled: a frame being staged may still land there.
            await asyncio.to_thread(writer.remove_empty_staging)
            report.index = await asyncio.to_thread(
                write_index, writer.root, include_phi=self.include_phi
            )
        self._tick()
        return report

    def _settled(
        self, settled: SettledLoad, writer: SeriesWriter | None, tracker: SeriesTracker | None
    ) -> None:
        report = self.report
        image_id, series, nbytes, error = settled
        if error is None:
            report.outcomes[image_id] = "loaded"
            report.loaded += 1
            report.bytes += nbytes
            if series is not None:
                report.image_series[image_id] = series
        else:
            report.failures[image_id] = describe_error(error)
            report.errors[image_id] = error
        if writer is not None and tracker is not None:
            # The last load to settle may complete other series: write them.
            self._write(writer, tracker.settled(image_id, series, error is None))

    def _write(self, writer: SeriesWriter, ready: list[str]) -> None:
        for series in ready:
            task = asyncio.ensure_future(self._finalize(writer, series))
            self._writing.add(task)
            task.add_done_callback(self._writing.discard)

    async def _finalize(self, writer: SeriesWriter, series: str) -> None:
        try:
            written = await self.backend.finalize(writer, series)
        except Exception as exc:
            # The series' frames stay staged for a later run; say so rather than drop it.
            self.report.failures[f"series:{series}"] = describe_error(exc)
            self.report.errors[f"series:{series}"] = exc
            return
        self.report.written.append(written)
        self._tick()

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress(self.report)


async def prefetch(
    loader: ImageLoader,
    image_ids: Iterable[str],
    *,
    output: str | os.PathLike[str] | None = None,
    format: str = "npy",
    include_phi: bool = False,
    progress: ProgressCallback | None = None,
) -> PrefetchReport:
    """Load ``image_ids`` at PREFETCH priority (to ``output`` if given, in ``format``,
    with ``index.csv``): :class:`PrefetchJob`."""
    job = PrefetchJob(
        loader,
        image_ids,
        output=output,
        format=format,
        include_phi=include_phi,
        progress=progress,
    )
    return await job.run()
