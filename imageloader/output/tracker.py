"""When is a series complete? Counting each series' frames as their loads settle.

A series is written as soon as every frame of it has loaded, so a bulk prefetch
holds at most the series in progress, never the study. That needs to know, before
loading, which imageIds belong to which series: DICOMweb listings register that
metadata up front. For an imageId whose series is unknown until it loads (a
``dicomfile:`` path), no series can be called complete while it is pending, so such
runs write their series when the last load settles.

A series in which a frame failed is held back: its frames stay staged, and a later
run loads only the missing ones and then writes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .writer import SeriesWriter

__all__ = ["ResumePlan", "SeriesTracker", "plan_resume"]


class SeriesTracker:
    """Says which series are ready to write as loads settle.

    ``expected`` maps each imageId still to settle to its series, or to None when
    the series is not known before loading.
    """

    def __init__(self, expected: Mapping[str, str | None]) -> None:
        self._expected = dict(expected)
        self._remaining: Counter[str] = Counter(s for s in expected.values() if s is not None)
        self._unknown = sum(1 for s in expected.values() if s is None)
        self._staged: set[str] = set()
        self.held: set[str] = set()
        self.finalized: set[str] = set()

    @property
    def unknown_pending(self) -> int:
        """Loads pending whose series is not known yet."""
        return self._unknown

    def settled(self, image_id: str, series: str | None, ok: bool) -> list[str]:
        """Record one settled load; returns the series now ready to write (each once).

        ``series`` is where the frame was staged (or, for a failure, its series if
        known by now); ``ok`` whether it loaded.
        """
        prior: str | None = None
        if image_id in self._expected:
            prior = self._expected.pop(image_id)
            if prior is None:
                self._unknown -= 1
            else:
                self._remaining[prior] -= 1
        if ok and series is not None:
            self._staged.add(series)
        elif not ok:
            self.held.update(s for s in (series, prior) if s is not None)
        if self._unknown:
            return []
        ready = [
            s
            for s in sorted(self._staged)
            if s not in self.held and s not in self.finalized and self._remaining[s] <= 0
        ]
        self.finalized.update(ready)
        return ready

    def unwritten(self) -> list[str]:
        """Series with staged frames that were not handed out for writing."""
        return sorted(self._staged - self.finalized)


@dataclass
class ResumePlan:
    """What a run still has to do, given what an earlier run left on disk."""

    to_load: list[str]
    #: Already staged (loaded by an earlier run, not assembled yet).
    resumed: list[str]
    #: Already in a complete series.
    skipped: int
    tracker: SeriesTracker
    #: Series whose every frame was staged already: ready to write now.
    ready: list[str]


def plan_resume(
    writer: SeriesWriter, image_ids: Sequence[str], known: Mapping[str, str | None]
) -> ResumePlan:
    """Skip complete series, count staged frames as loaded, track the rest.

    ``known`` maps imageIds to their series where known before loading. Blocking
    (it reads the output directory): call it from a worker thread in async code.
    """
    writer.clean_temporaries()
    complete = writer.complete()
    staged = {frame.image_id: frame.series for frame in writer.staged()}
    resumed = [i for i in image_ids if i in staged]
    to_load = [i for i in image_ids if i not in complete and i not in staged]
    tracker = SeriesTracker({i: staged.get(i) or known.get(i) for i in (*resumed, *to_load)})
    ready = [s for i in resumed for s in tracker.settled(i, staged[i], True)]
    skipped = sum(1 for i in image_ids if i in complete)
    return ResumePlan(to_load, resumed, skipped, tracker, ready)
