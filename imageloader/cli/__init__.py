"""The ``imageloader`` command: ``demo``, ``prefetch`` and ``info``.

- :mod:`.demo`: pydicom's sample images through the whole pipeline, and a montage PNG.
- :mod:`.prefetch`: a DICOMweb study or series, or a file of imageIds, loaded at
  PREFETCH priority with a progress bar, optionally written to disk (``--output``),
  on this machine or a Dask cluster; :mod:`.report` formats its failures and its
  ``--report`` JSON, :mod:`.progress` draws its progress.
- :mod:`.info`: an image's metadata modules and fields as JSON.

argparse prints descriptions as written, so the help texts here are plain text.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from .demo import add_demo_parser, run_demo
from .info import add_info_parser, run_info
from .prefetch import EXIT_INTERRUPTED, EXIT_USAGE, add_prefetch_parser, run_prefetch

__all__ = ["EXIT_CODES", "main"]

#: What every subcommand's exit status means (shown in the help).
EXIT_CODES = """\
exit status:
  0    every image loaded (or was already complete on disk)
  1    some images failed to load (prefetch: or a series, or the --report
       file, could not be written)
  2    usage error or nothing to do: bad arguments, no imageIds, imageIds
       that cannot be listed, a study or series with no instances, a --query
       matching no series, a Dask scheduler that cannot be reached
  130  interrupted with Ctrl-C (a prefetch also on SIGTERM; it stops cleanly
       and a rerun resumes)
"""

DESCRIPTION = """\
Load medical images (DICOM files, WADO-URI, DICOMweb, NIfTI, web images) with
asyncio: run the pipeline on sample images (demo), prefetch studies, series or
lists of imageIds to disk (prefetch), print one image's metadata (info).
"""


def _parser() -> argparse.ArgumentParser:
    common: dict[str, Any] = {
        "epilog": EXIT_CODES,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
    parser = argparse.ArgumentParser(
        prog="imageloader",
        description=DESCRIPTION,
        **common,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo_parser(sub, **common)
    add_prefetch_parser(sub, **common)
    add_info_parser(sub, **common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``imageloader`` console script; returns the exit status."""
    args = _parser().parse_args(argv)  # exits 2 on a usage error (0 for --help)
    try:
        if args.command == "demo":
            return asyncio.run(run_demo(args.output, args.workers))
        if args.command == "prefetch":
            return asyncio.run(run_prefetch(args))
        if args.command == "info":
            if args.frame is not None and args.image_id != "-":
                print("imageloader info: --frame goes with - (standard input)", file=sys.stderr)
                return EXIT_USAGE
            return asyncio.run(run_info(args.image_id, compact=args.compact, frame=args.frame))
    except KeyboardInterrupt:
        # prefetch handles Ctrl-C itself; this is any other moment (or command).
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands
