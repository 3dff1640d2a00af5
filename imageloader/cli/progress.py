"""The prefetch progress display: a redrawn bar on a terminal, plain lines otherwise.

On a terminal one line is redrawn in place (``\\r``) at most ten times a second;
when stdout is a file or a pipe (CI logs, ``| tee``) a plain line is printed every
``interval`` seconds instead, so logs stay readable and small. Rates count this
run's loads (not what was skipped or resumed); MB/s is decoded pixel data.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..output import PrefetchReport

__all__ = ["ProgressBar", "format_duration"]


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` or ``M:SS``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """Shows a :class:`~imageloader.output.PrefetchReport` as it changes."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        interval: float = 2.0,
        width: int = 24,
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = 0.1 if self.tty else interval
        self.width = width
        self._last = 0.0
        self._drawn = False

    @staticmethod
    def status(report: PrefetchReport) -> str:
        """``120/500 24% 85.3 img/s 44.1 MB/s ETA 0:04, 2 failed``."""
        elapsed = max(report.seconds, 1e-6)
        settled = report.loaded + len(report.failures)  # this run's work, not skips
        rate = settled / elapsed
        total = max(report.total, 1)
        done = min(report.done, report.total)
        remaining = report.total - done
        eta = format_duration(remaining / rate) if rate > 0 else "--:--"
        text = (
            f"{done}/{report.total} {100 * done / total:3.0f}% {rate:.1f} img/s "
            f"{report.bytes / elapsed / 1e6:.1f} MB/s ETA {eta}"
        )
        if report.failures:
            text += f", {len(report.failures)} failed"
        return text

    def update(self, report: PrefetchReport) -> None:
        """Redraw if the last draw is old enough (:meth:`finish` draws the final state)."""
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        self._draw(report)

    def _draw(self, report: PrefetchReport) -> None:
        if self.tty:
            filled = int(self.width * min(report.done, report.total) / max(report.total, 1))
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r[{bar}] {self.status(report)}\x1b[K")
            self._drawn = True
        else:
            self.stream.write(f"progress: {self.status(report)}\n")
        self.stream.flush()

    def finish(self, report: PrefetchReport) -> None:
        """Draw the final state and end the line."""
        self._draw(report)
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
