"""What ``imageloader prefetch`` says about its outcome: failure lines and the ``--report`` JSON.

Each failed image gets one line on stderr: the imageId once, then the error type and
a reason from which the imageId and its URL or path are removed (the error messages
name them, which would print them twice), cut to :data:`LINE_LIMIT` characters. The
imageId itself is never cut, so a line can always be matched back to its image.

``--report FILE`` writes everything as JSON (:func:`report_document`): per image its
status (``ok`` loaded in this run, ``failed``, ``skipped`` already complete on disk or
staged by an earlier run, ``pending`` not reached because the run was interrupted),
the error type and full message of a failure; the totals; the series written, held
back or failed; the elapsed time and exit status.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..output import PrefetchReport

__all__ = [
    "LINE_LIMIT",
    "error_parts",
    "failure_line",
    "failure_lines",
    "report_document",
    "short_reason",
    "write_report",
]

#: A failure line is cut to this many characters (the imageId is never cut).
LINE_LIMIT = 200
#: However long the imageId, this much of the reason is shown.
_MIN_REASON = 60
_SERIES_PREFIX = "series:"


def error_parts(error: BaseException | None, described: str) -> tuple[str, str]:
    """``(error type, full message)`` of a failure, from the error or its description.

    ``described`` is the ``"ErrorType: message"`` the report holds for it (used when
    the error object itself is not there).
    """
    if error is not None:
        return type(error).__name__, str(getattr(error, "message", None) or error)
    kind, sep, message = described.partition(": ")
    return (kind, message) if sep else ("Error", described)


def _names(image_id: str) -> list[str]:
    """The imageId and the URL or path inside it (without query), longest first."""
    names = {image_id}
    _, sep, rest = image_id.partition(":")
    for candidate in (rest, rest.split("?", 1)[0], image_id.split("?", 1)[0]):
        if sep and "/" in candidate and len(candidate) > 1:
            names.add(candidate)
    return sorted(names, key=len, reverse=True)


def _relative(url: str, names: Iterable[str]) -> str:
    """``url`` as ``…/rest`` after the longest folder it shares with the image's URL."""
    best = ""
    for name in names:
        pairs = enumerate(zip(url, name, strict=False))
        shared = next((i for i, (a, b) in pairs if a != b), min(len(url), len(name)))
        folder = url[: url.rfind("/", 0, shared) + 1]
        # Past "scheme://host/": what is left names a resource, not just the server.
        if folder.count("/") >= 3 and len(folder) > len(best):
            best = folder
    return f"…/{url[len(best) :]}" if best else url


def short_reason(image_id: str, error: BaseException | None, described: str = "") -> str:
    """``"ErrorType: reason"`` of a failure, without the imageId, its URL or its path.

    A URL the error names that differs from the image's (a metadata request made for
    a frame, say) is kept relative to what they share: ``from …/metadata``.
    """
    kind, message = error_parts(error, described)
    names = _names(image_id)
    url = getattr(error, "url", None)
    if isinstance(url, str) and url:
        if url in names or url.split("?", 1)[0] in names:
            message = message.replace(f" from {url}", "")
        else:
            message = message.replace(f" from {url}", f" from {_relative(url, names)}")
    for name in names:
        for quoted in (f"'{name}'", f'"{name}"', name):
            message = message.replace(quoted, "…")
    message = " ".join(message.split())  # one line, whatever the message held
    return f"{kind}: {message}" if message else kind


def failure_line(image_id: str, reason: str, limit: int = LINE_LIMIT) -> str:
    """``FAILED <imageId>: <reason>``, the reason cut with an ellipsis to fit ``limit``."""
    prefix = f"FAILED {image_id}: "
    room = max(limit - len(prefix), _MIN_REASON)
    if len(reason) > room:
        reason = reason[: room - 1].rstrip() + "…"
    return prefix + reason


def failure_lines(report: PrefetchReport, limit: int = LINE_LIMIT) -> list[str]:
    """One line per failure of ``report`` (images first, then series), in the order seen."""
    ordered = sorted(report.failures, key=lambda key: key.startswith(_SERIES_PREFIX))
    return [
        failure_line(key, short_reason(key, report.errors.get(key), report.failures[key]), limit)
        for key in ordered
    ]


_SKIP_MESSAGES = {
    "skipped": "complete on disk from an earlier run",
    "resumed": "staged by an earlier run",
}


def _image_entry(image_id: str, report: PrefetchReport) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "image_id": image_id,
        "status": "ok",
        "series": report.image_series.get(image_id),
        "error_type": None,
        "message": None,
    }
    if image_id in report.failures:
        kind, message = error_parts(report.errors.get(image_id), report.failures[image_id])
        entry.update(status="failed", error_type=kind, message=message)
        return entry
    outcome = report.outcomes.get(image_id)
    if outcome in _SKIP_MESSAGES:
        entry.update(status="skipped", message=_SKIP_MESSAGES[outcome])
    elif outcome is None:
        entry.update(status="pending", message="not loaded: the run was interrupted")
    return entry


def report_document(
    report: PrefetchReport | None,
    image_ids: Iterable[str],
    *,
    exit_code: int,
    started_at: str,
    elapsed: float,
    source: Mapping[str, Any],
    output: str | None,
    error: str | None = None,
) -> dict[str, Any]:
    """The ``--report`` JSON: every image's outcome, the totals, the series, the timing.

    ``report`` is None when no run happened (the imageIds could not be listed: then
    ``error`` says why).
    """
    report = report if report is not None else PrefetchReport()
    ids = list(dict.fromkeys(image_ids))
    listed = set(ids)
    # Failures under an id the list did not hold (an error naming no imageId: "?").
    ids += [k for k in report.failures if k not in listed and not k.startswith(_SERIES_PREFIX)]
    images = [_image_entry(image_id, report) for image_id in ids]
    counts = dict.fromkeys(("ok", "failed", "skipped", "pending"), 0)
    for entry in images:
        counts[entry["status"]] += 1
    series_failed = []
    for key, described in report.failures.items():
        if key.startswith(_SERIES_PREFIX):
            kind, message = error_parts(report.errors.get(key), described)
            series_failed.append(
                {"series": key[len(_SERIES_PREFIX) :], "error_type": kind, "message": message}
            )
    return {
        "command": "prefetch",
        "source": dict(source),
        "output": output,
        "started_at": started_at,
        "elapsed_seconds": round(elapsed, 3),
        "interrupted": report.interrupted,
        "exit_code": exit_code,
        "error": error,
        "totals": {
            "images": len(images),
            **counts,
            "complete_on_disk": report.skipped,
            "resumed": report.resumed,
            "bytes_decoded": report.bytes,
            "series_written": len(report.written),
            "series_held": len(report.held),
            "series_failed": len(series_failed),
        },
        "images": images,
        "series": {
            "written": [
                {
                    "series": w.series,
                    "layout": w.layout,
                    "frames": w.frames,
                    "manifest": str(w.manifest),
                    "data": str(w.data),
                }
                for w in report.written
            ],
            "held": list(report.held),
            "failed": series_failed,
        },
    }


def write_report(path: Path, document: Mapping[str, Any]) -> None:
    """Write the JSON to ``path`` atomically (blocking: call it from a thread)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(document, indent=1) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
