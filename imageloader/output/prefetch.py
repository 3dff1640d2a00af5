"""Bulk prefetch on one machine: load many imageIds at PREFETCH priority, optionally to disk.

::

    async with ImageLoader() as loader:
        ids = await image_ids_for_series(loader, base, study, series)
        report = await prefetch(loader, ids, output="out/")
    print(report.loaded, report.failures)

Loads run as a sliding window (``ImageLoader.iter_images``), so memory is what is in
flight plus, with ``output``, nothing more: each frame is staged to disk as it
arrives and a series is assembled when its last frame is in (see
:mod:`imageloader.output.writer`). Failures never stop the run; they are collected
in the report. Cancelling the run leaves a consistent output directory to resume.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ImageLoaderError
from ..image import Image
from ..request_pool import RequestType
from .tracker import SeriesTracker, plan_resume
from .writer import SeriesWriter, WrittenSeries, series_key

if TYPE_CHECKING:
    from ..loader import ImageLoader

__all__ = ["PrefetchJob", "PrefetchReport", "ProgressCallback", "describe_error", "prefetch"]


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
    #: imageId → the series (file stem under ``output``) of each image loaded.
    image_series: dict[str, str] = field(default_factory=dict)
    #: imageId → "loaded", "skipped" or "resumed" for each image settled without failure
    #: (recorded by :class:`PrefetchJob`; failures are in ``failures``).
    outcomes: dict[str, str] = field(default_factory=dict)
    written: list[WrittenSeries] = field(default_factory=list)
    #: Series not written because a frame failed (their frames stay staged).
    held: list[str] = field(default_factory=list)
    #: Decoded pixel bytes of the images loaded.
    bytes: int = 0
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


class PrefetchJob:
    """One prefetch run; :attr:`report` stays readable if :meth:`run` is cancelled."""

    def __init__(
        self,
        loader: ImageLoader,
        image_ids: Iterable[str],
        *,
        output: str | os.PathLike[str] | None = None,
        progress: ProgressCallback | None = None,
        request_type: RequestType | str = RequestType.PREFETCH,
    ) -> None:
        self.loader = loader
        self.image_ids = list(dict.fromkeys(image_ids))  # once each, in order
        self.output = output
        self.progress = progress
        self.request_type = RequestType(request_type)
        self.report = PrefetchReport(total=len(self.image_ids))
        self._writing: set[asyncio.Task[None]] = set()

    def _known_series(self, image_id: str) -> str | None:
        modules = self.loader.metadata.modules(image_id, ("generalSeriesModule",))
        return series_key(modules) if modules else None

    async def run(self) -> PrefetchReport:
        """Load everything; returns the report (also when some loads failed)."""
        report = self.report
        writer = SeriesWriter(self.output) if self.output is not None else None
        to_load = self.image_ids
        tracker: SeriesTracker | None = None
        try:
            if writer is not None:
                known = {i: self._known_series(i) for i in to_load}
                plan = await asyncio.to_thread(plan_resume, writer, to_load, known)
                to_load, tracker = plan.to_load, plan.tracker
                report.skipped, report.resumed = plan.skipped, len(plan.resumed)
                report.outcomes.update(dict.fromkeys(self.image_ids, "skipped"))
                report.outcomes.update(dict.fromkeys(plan.resumed, "resumed"))
                for image_id in to_load:
                    del report.outcomes[image_id]
                self._write(writer, plan.ready)
            self._tick()
            async for result in self.loader.iter_images(
                to_load, request_type=self.request_type, cache=False, return_exceptions=True
            ):
                if isinstance(result, Image):
                    await self._loaded(result, writer, tracker)
                else:
                    self._failed(result, writer, tracker)
                self._tick()
        finally:
            if self._writing:
                # A series being assembled is finished, not torn (even when cancelled).
                await asyncio.wait(set(self._writing))
            if tracker is not None:
                report.held = sorted(tracker.held)
            report.finished = time.monotonic()
        if writer is not None:
            # Not when cancelled: a frame being staged on a thread may still land there.
            await asyncio.to_thread(writer.remove_empty_staging)
        return report

    async def _loaded(
        self, image: Image, writer: SeriesWriter | None, tracker: SeriesTracker | None
    ) -> None:
        if writer is not None and tracker is not None:
            modules = self.loader.metadata.modules(image.image_id)
            try:
                series = await asyncio.to_thread(writer.stage, image, modules)
            except OSError as exc:
                self.report.failures[image.image_id] = describe_error(exc)
                self.report.errors[image.image_id] = exc
                # The last load to settle may complete other series: write them.
                self._write(writer, tracker.settled(image.image_id, series_key(modules), False))
                return
            self._write(writer, tracker.settled(image.image_id, series, True))
            self.report.image_series[image.image_id] = series
        self.report.outcomes[image.image_id] = "loaded"
        self.report.loaded += 1
        self.report.bytes += image.pixel_data.nbytes

    def _failed(
        self, error: ImageLoaderError, writer: SeriesWriter | None, tracker: SeriesTracker | None
    ) -> None:
        image_id = error.image_id or "?"
        self.report.failures[image_id] = describe_error(error)
        self.report.errors[image_id] = error
        if writer is not None and tracker is not None:
            # The last load to settle may complete other series: write them.
            self._write(writer, tracker.settled(image_id, self._known_series(image_id), False))

    def _write(self, writer: SeriesWriter, ready: list[str]) -> None:
        for series in ready:
            task = asyncio.ensure_future(self._finalize(writer, series))
            self._writing.add(task)
            task.add_done_callback(self._writing.discard)

    async def _finalize(self, writer: SeriesWriter, series: str) -> None:
        try:
            written = await asyncio.to_thread(writer.finalize, series)
        except (ImageLoaderError, OSError) as exc:
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
    progress: ProgressCallback | None = None,
) -> PrefetchReport:
    """Load ``image_ids`` at PREFETCH priority (to ``output`` if given): :class:`PrefetchJob`."""
    return await PrefetchJob(loader, image_ids, output=output, progress=progress).run()
