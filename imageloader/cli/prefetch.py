"""``imageloader prefetch``: load a study, a series or a list of imageIds, optionally to disk.

The first Ctrl-C (SIGINT, or SIGTERM) stops the run cleanly: loads in flight are
cancelled, a series being written is finished, the loader closes (its decode
processes exit), the summary is printed and the exit code is 130. Further Ctrl-Cs
while it stops are ignored, so cleanup is never cut short. Exit codes: see
:data:`imageloader.cli.EXIT_CODES`.

Progress and the summary go to stdout; each failed image gets one line on stderr
(:mod:`.report`), and ``--report FILE`` writes every image's outcome as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

from ..errors import ImageLoaderError, NotFoundError
from ..loader import ImageLoader
from ..output import FORMATS, LocalBackend, PrefetchJob, PrefetchReport, describe_error
from ..request_pool import DEFAULT_CAPACITY
from .progress import ProgressBar, format_duration
from .report import failure_lines, report_document, write_report

if TYPE_CHECKING:
    from ..http import HttpOptions

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_prefetch_parser",
    "run_prefetch",
]

T = TypeVar("T")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DESCRIPTION = """\
Load every image of a DICOMweb study or series, or of a file of imageIds, at
PREFETCH priority with a progress display, continuing past failures; optionally
write one volume and a JSON manifest per series (--output), and index.csv, one
row per series written. A rerun skips what is complete on disk and resumes what
an interrupted run staged.

--format nifti writes each series as <SeriesInstanceUID>.nii.gz, as dcm2niix
does (RAS affine from the DICOM geometry, slices in scan order, scl_slope and
scl_inter where the modality LUT needs them); the default, npy, writes .npy.
index.csv lists UIDs, modality, shape, dtype, spacing and file; patient
attributes and free text (IDs, names, dates, descriptions) only with
--include-phi.

A study or series with no instances (or one the server answers an empty list
for) is an error: "no instances found for study UID at URL", exit status 2.

--query "Modality=CT&StudyDate=20240101-" searches the server's series (QIDO-RS,
DICOM keywords or tags with QIDO matching values: wildcards * and ?, date ranges)
and prefetches every series that matches; with --study, only that study's series
(--series narrows it to one). An unknown keyword is a usage error (exit 2), and so
is a query that matches nothing: "no series match query Q at URL".

--list prints what would be fetched and loads no pixel data (only the series'
metadata): one line per series (study UID, series UID, modality, instances,
frames, estimated bytes = rows * columns * samples per pixel * bits allocated / 8
of each frame), then the totals. It writes nothing, even with --output.

Each failed image gets one line on stderr ("FAILED imageId: ErrorType: reason");
--report FILE writes every image's outcome (ok, failed, skipped, pending), the
totals and the elapsed time as JSON. The first Ctrl-C stops cleanly: loads in
flight are cancelled, series being written are finished, the summary is printed.
"""


def add_prefetch_parser(sub: Any, **common: Any) -> None:
    """The ``prefetch`` subcommand's arguments."""
    p = sub.add_parser(
        "prefetch",
        help="load a study, series or list of imageIds (optionally writing .npy or NIfTI)",
        description=DESCRIPTION,
        **common,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dicomweb", metavar="URL",
                        help="DICOMweb root (with --study and/or --query)")  # fmt: skip
    source.add_argument("--ids", type=Path, metavar="FILE", help="one imageId a line, any scheme")
    p.add_argument("--study", metavar="UID", help="StudyInstanceUID (with --dicomweb)")
    p.add_argument("--series", metavar="UID", help="only this SeriesInstanceUID (with --study)")
    p.add_argument("--query", metavar="QUERY", help='series search (with --dicomweb), as a URL '
                   'query string: "Modality=CT&StudyDate=20240101-"')  # fmt: skip
    p.add_argument("--list", action="store_true",
                   help="print the series, sizes and total; load no pixel data")  # fmt: skip
    p.add_argument("--output", type=Path, metavar="DIR",
                   help="write one volume per series, its JSON and index.csv here")  # fmt: skip
    p.add_argument("--format", choices=FORMATS, default="npy",
                   help="volumes as .npy (default) or .nii.gz (NIfTI, as dcm2niix)")  # fmt: skip
    p.add_argument("--include-phi", action="store_true",
                   help="put patient-identifying columns in index.csv")  # fmt: skip
    p.add_argument("--report", type=Path, metavar="FILE",
                   help="write every image's outcome, totals and elapsed time as JSON")  # fmt: skip
    p.add_argument("--concurrency", type=int, default=16, metavar="N", help="requests at once")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="decode processes")
    p.add_argument("--auth", metavar="USER:PASSWORD", help="basic auth for --dicomweb "
                   "(default: $IMAGELOADER_AUTH)")  # fmt: skip
    p.add_argument("--dask-scheduler", metavar="ADDRESS", help="run on this Dask cluster")
    p.add_argument("--dask-batch", type=int, default=8, metavar="N", help="imageIds per Dask task")
    p.add_argument("--progress-interval", type=float, default=2.0, help=argparse.SUPPRESS)


def _http_options(args: argparse.Namespace) -> HttpOptions | None:
    from ..http import HttpOptions

    auth = args.auth or os.environ.get("IMAGELOADER_AUTH")
    if not (auth and args.dicomweb):
        return None
    user, _, password = auth.partition(":")
    return HttpOptions(auth={args.dicomweb: (user, password)})


def _loader(args: argparse.Namespace) -> ImageLoader:
    concurrency = max(1, args.concurrency)
    return ImageLoader(
        max_web_workers=args.workers,
        request_limits={"prefetch": concurrency},
        max_concurrent_requests=max(DEFAULT_CAPACITY, concurrency),
        max_cache_size_bytes=256 << 20,  # prefetch does not cache; frames go to disk
        http=_http_options(args),
    )


def _query_filters(args: argparse.Namespace) -> dict[str, Any]:
    """``--query`` as QIDO-RS filters (a keyword given twice: a list, a UID list).

    ValueError (naming the keyword) if it is not a DICOM keyword or tag, or if the
    query is empty; checked before any request.
    """
    from ..dicom.qido import check_uid, query_params

    pairs = parse_qsl(args.query, keep_blank_values=True)
    if not pairs:
        raise ValueError(f"empty query: {args.query!r}")
    filters: dict[str, Any] = {}
    for name, value in pairs:
        if name in filters:
            previous = filters[name]
            filters[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            filters[name] = value
    if args.series:
        filters["SeriesInstanceUID"] = check_uid("series", args.series)
    if args.study:
        check_uid("study", args.study)
    query_params(filters)  # raises ValueError for an unknown keyword
    return filters


@dataclass(frozen=True)
class _Series:
    """One series to fetch: its UIDs (the study's from the search, or --study)."""

    study: str
    series: str


async def _query_series(loader: ImageLoader, args: argparse.Namespace) -> list[_Series]:
    """The series ``--query`` matches (of ``--study``, when given); NotFoundError if none."""
    from ..dicomweb import search_series, series_uids

    base = args.dicomweb.rstrip("/")
    results = await search_series(loader, base, args.study, **_query_filters(args))
    found: dict[_Series, None] = {}
    for study, series in series_uids(results, base):
        study = study or args.study
        if study and series:
            found[_Series(study, series)] = None
    if not found:
        where = f" in study {args.study}" if args.study else ""
        raise NotFoundError(f"no series match query {args.query}{where} at {base}")
    return list(found)


async def _series_ids(
    loader: ImageLoader, args: argparse.Namespace
) -> list[tuple[_Series, list[str]]]:
    """Each series to fetch (``--query``, ``--study``, ``--series``) with its imageIds."""
    from ..dicomweb import image_ids_for_series, search_series, series_uids

    base = args.dicomweb
    if args.query is not None:
        chosen = await _query_series(loader, args)
    elif args.series:
        chosen = [_Series(args.study, args.series)]
    else:  # --list of a study: its series, each listed on its own line
        results = await search_series(loader, base, args.study)
        uids = (series for _, series in series_uids(results, base))
        chosen = [_Series(args.study, uid) for uid in dict.fromkeys(uids) if uid]
        if not chosen:
            from ..dicomweb import image_ids_for_study

            await image_ids_for_study(loader, base, args.study)  # its "no instances found"
    found = await asyncio.gather(
        *(image_ids_for_series(loader, base, s.study, s.series) for s in chosen)
    )
    return list(zip(chosen, found, strict=True))


async def _image_ids(loader: ImageLoader, args: argparse.Namespace) -> list[str]:
    if args.ids is not None:
        text = await asyncio.to_thread(args.ids.read_text)
        lines = (s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#"))
        return list(dict.fromkeys(lines))  # once each, in order
    from ..dicomweb import image_ids_for_series, image_ids_for_study

    if args.query is not None:
        return [i for _, ids in await _series_ids(loader, args) for i in ids]
    if args.series:
        return await image_ids_for_series(loader, args.dicomweb, args.study, args.series)
    return await image_ids_for_study(loader, args.dicomweb, args.study)


def _frame_bytes(loader: ImageLoader, image_id: str) -> int:
    """rows * columns * samples per pixel * bits allocated / 8 (rounded up); 0 if unknown."""
    pixel = loader.metadata.get("imagePixelModule", image_id)
    if pixel is None:
        return 0
    bits = pixel.rows * pixel.columns * pixel.samples_per_pixel * pixel.bits_allocated
    return int((bits + 7) // 8)


def _listing(loader: ImageLoader, chosen: list[tuple[_Series, list[str]]]) -> str:
    """``--list``'s lines: one per series, then the totals."""
    lines = []
    instances = frames = size = 0
    for series, ids in chosen:
        general = loader.metadata.get("generalSeriesModule", ids[0]) if ids else None
        modality = getattr(general, "modality", None) or "?"
        count = len({i.rsplit("/frames/", 1)[0] for i in ids})
        nbytes = sum(_frame_bytes(loader, i) for i in ids)
        lines.append(
            f"study {series.study} series {series.series} modality {modality}: "
            f"{count} instances, {len(ids)} frames, {nbytes} bytes ({nbytes / 1e6:.1f} MB)"
        )
        instances, frames, size = instances + count, frames + len(ids), size + nbytes
    lines.append(
        f"total: {len(chosen)} series, {instances} instances, {frames} frames, "
        f"{size} bytes ({size / 1e6:.1f} MB); nothing fetched (--list)"
    )
    return "\n".join(lines)


async def _until_signalled(work: Callable[[], Awaitable[T]], on_signal: Callable[[], object]) -> T:
    """Run ``work()``; the first SIGINT/SIGTERM calls ``on_signal``, later ones are ignored."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    received = False

    def handler() -> None:
        nonlocal received
        if not received:
            received = True
            print("\ninterrupted: stopping…", file=sys.stderr, flush=True)
            on_signal()

    for sig in signals:
        loop.add_signal_handler(sig, handler)
    try:
        return await work()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _run_local(
    loader: ImageLoader, ids: list[str], args: argparse.Namespace, bar: ProgressBar
) -> PrefetchReport:
    job = PrefetchJob(
        loader,
        ids,
        output=args.output,
        format=args.format,
        include_phi=args.include_phi,
        progress=bar.update,
    )
    task = asyncio.ensure_future(job.run())
    try:
        await _until_signalled(lambda: asyncio.shield(task), task.cancel)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not task.cancelled() or (current is not None and current.cancelling()):
            raise  # we were cancelled, not just the job
        job.report.interrupted = True
    return job.report


async def _run_dask(
    loader: ImageLoader, ids: list[str], args: argparse.Namespace, bar: ProgressBar
) -> PrefetchReport:
    from distributed import Client

    from ..integrations.dask import prefetch_many

    # The series the listing registered, so a series is written once its frames are in.
    local = LocalBackend(loader)
    known = {i: series for i in ids if (series := local.known_series(i)) is not None}
    stop = threading.Event()

    def run() -> PrefetchReport:
        with Client(args.dask_scheduler, timeout=10) as client:  # type: ignore[no-untyped-call]
            return prefetch_many(
                ids,
                client=client,
                output=args.output,
                format=args.format,
                include_phi=args.include_phi,
                batch_size=args.dask_batch,
                loader_options={"http": http} if (http := _http_options(args)) else None,
                series_of=known,
                progress=bar.update,
                stop=stop,
            )

    # The client is synchronous: it runs on a thread, and a signal sets `stop`. The
    # report is the local one's: prefetch_many runs the same engine (PrefetchJob).
    return await _until_signalled(lambda: asyncio.to_thread(run), stop.set)


def _summary(report: PrefetchReport, output: Path | None, report_file: Path | None) -> str:
    lines = [
        f"{'interrupted' if report.interrupted else 'done'} in {format_duration(report.seconds)}:"
        f" {report.loaded} loaded, {len(report.failures)} failed, {report.skipped} skipped "
        f"(complete on disk), {report.resumed} resumed of {report.total} images; "
        f"{report.bytes / 1e6:.1f} MB decoded, "
        f"{report.loaded / max(report.seconds, 1e-6):.1f} images/s"
    ]
    if output is not None:
        volumes = sum(1 for w in report.written if w.layout == "volume")
        kind = "NIfTI" if any(w.format == "nifti" for w in report.written) else "volumes"
        lines.append(
            f"wrote {len(report.written)} series to {output} ({volumes} {kind}, "
            f"{len(report.written) - volumes} per-frame)"
            + (f"; index: {report.index}" if report.index is not None else "")
        )
        if report.held:
            lines.append(f"held back (a frame failed; rerun to resume): {', '.join(report.held)}")
    if report_file is not None:
        lines.append(f"report: {report_file}")
    return "\n".join(lines)


def _listing_problem(error: ImageLoaderError | OSError) -> str:
    """What to say when the imageIds could not be listed."""
    if isinstance(error, NotFoundError) and error.status is None:
        # The server answered, with nothing: "no instances found for study … at …"
        # (imageloader.dicomweb). A 404 has its status and is said as any other error.
        return error.message
    return f"cannot list imageIds: {describe_error(error)}"


def _report_problem(path: Path) -> str | None:
    """Why ``--report`` cannot be written there (checked before hours of work), or None."""
    if path.is_dir():
        return f"--report {path} is a directory"
    if not path.parent.is_dir():
        return f"--report {path}: no directory {path.parent}"
    if not os.access(path.parent, os.W_OK):
        return f"--report {path}: cannot write in {path.parent}"
    return None


def _usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments' combination (or ``--query``), or None."""
    if args.ids is not None and (args.query is not None or args.list):
        return "--query and --list go with --dicomweb"
    if args.dicomweb and not args.study and args.query is None:
        return "--dicomweb needs --study or --query"
    if args.series and not args.study:
        return "--series needs --study"
    if args.list and args.report is not None:
        return "--list writes no --report"
    if args.output is None and (args.format != "npy" or args.include_phi):
        return "--format and --include-phi go with --output"
    if args.format == "nifti" and importlib.util.find_spec("nibabel") is None:
        return "--format nifti needs nibabel: pip install 'imageloader[nifti]'"
    if args.query is not None:
        try:
            _query_filters(args)
        except ValueError as exc:
            return f"--query: {exc}"
    return None


async def _run_list(args: argparse.Namespace) -> int:
    """``--list``: the series' metadata only, printed; no pixel data, nothing written."""
    async with _loader(args) as loader:
        try:
            chosen = await _series_ids(loader, args)
        except (ImageLoaderError, OSError) as exc:
            print(f"imageloader prefetch: {_listing_problem(exc)}", file=sys.stderr)
            return EXIT_USAGE
        print(_listing(loader, chosen), flush=True)
    return EXIT_OK


async def run_prefetch(args: argparse.Namespace) -> int:
    """The ``prefetch`` command; returns the exit code."""
    usage = _usage_problem(args)
    if usage:
        print(f"imageloader prefetch: {usage}", file=sys.stderr)
        return EXIT_USAGE
    if args.list:
        return await _run_list(args)
    problem = args.report and await asyncio.to_thread(_report_problem, args.report)
    if problem:
        print(f"imageloader prefetch: {problem}", file=sys.stderr)
        return EXIT_USAGE
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()

    async def finish(
        code: int,
        report: PrefetchReport | None = None,
        ids: Sequence[str] = (),
        error: str | None = None,
    ) -> int:
        """Write the ``--report`` file (if asked for); returns the exit code."""
        if args.report is None:
            return code
        document = report_document(
            report,
            ids,
            exit_code=code,
            started_at=started_at,
            elapsed=time.monotonic() - started,
            source={k: getattr(args, k) for k in ("dicomweb", "study", "series")}
            | {"ids": str(args.ids) if args.ids is not None else None},
            output=str(args.output) if args.output is not None else None,
            error=error,
        )
        try:
            await asyncio.to_thread(write_report, args.report, document)
        except OSError as exc:
            print(f"imageloader prefetch: cannot write the report: {exc}", file=sys.stderr)
            return code or EXIT_FAILED
        return code

    if args.dask_scheduler and args.output is None:
        print("note: without --output, a Dask prefetch only checks that images load")
    bar = ProgressBar(interval=args.progress_interval)
    async with _loader(args) as loader:
        listing = asyncio.ensure_future(_image_ids(loader, args))
        try:
            ids = await _until_signalled(lambda: asyncio.shield(listing), listing.cancel)
        except asyncio.CancelledError:
            if not listing.cancelled():
                raise
            print("interrupted while listing the imageIds", file=sys.stderr)
            return await finish(EXIT_INTERRUPTED, error="interrupted while listing the imageIds")
        except (ImageLoaderError, OSError) as exc:
            message = _listing_problem(exc)
            print(f"imageloader prefetch: {message}", file=sys.stderr)
            return await finish(EXIT_USAGE, error=message)
        if not ids:
            print("imageloader prefetch: no imageIds to load", file=sys.stderr)
            return await finish(EXIT_USAGE, error="no imageIds to load")
        print(f"prefetching {len(ids)} images" + (f" into {args.output}" if args.output else ""))
        run = _run_dask if args.dask_scheduler else _run_local
        try:
            report = await run(loader, ids, args, bar)
        except (OSError, TimeoutError) as exc:  # the Dask scheduler cannot be reached
            print(f"imageloader prefetch: {describe_error(exc)}", file=sys.stderr)
            return await finish(EXIT_USAGE, error=describe_error(exc))
    # The loader is closed here: its decode processes have exited.
    bar.finish(report)
    lines = failure_lines(report)
    if lines:
        sys.stdout.flush()  # the progress first, when both streams are one terminal
        print("\n".join(lines), file=sys.stderr, flush=True)
    print(_summary(report, args.output, args.report), flush=True)
    code = EXIT_INTERRUPTED if report.interrupted else EXIT_OK if report.ok else EXIT_FAILED
    return await finish(code, report, ids)
