"""``imageloader info IMAGE_ID``: an image's metadata modules and Image fields as JSON.

``imageloader info - < ct.dcm`` reads a Part 10 file from standard input into
``loader.files`` (a file in memory, as a browser's File is to Cornerstone) and
describes it as ``dicomfile:0``; ``--frame N`` picks a frame of it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ..errors import ImageLoaderError
from ..loader import ImageLoader
from ..metadata import module_to_json
from ..output import describe_error, image_fields

__all__ = ["add_info_parser", "run_info"]


def add_info_parser(sub: Any, **common: Any) -> None:
    """The ``info`` subcommand's arguments."""
    p = sub.add_parser(
        "info",
        help="print an image's metadata modules and fields as JSON",
        description="Load one image and print its Image fields and metadata modules as\n"
        "JSON on stdout; an error goes to stderr.",
        **common,
    )
    p.add_argument(
        "image_id",
        metavar="IMAGE_ID",
        help="e.g. dicomfile:/data/ct.dcm, or - to read a DICOM file from standard input",
    )
    p.add_argument("--frame", type=int, metavar="N", help="with -: the frame to describe (1-based)")
    p.add_argument("--compact", action="store_true", help="one line of JSON")


async def run_info(image_id: str, *, compact: bool = False, frame: int | None = None) -> int:
    """Load one image and print ``{"image_id", "image", "modules"}``; returns the exit code."""
    # One image: decoding in this process is faster than starting a worker process.
    async with ImageLoader(max_web_workers=0) as loader:
        try:
            if image_id == "-":
                image_id = loader.files.add(sys.stdin.buffer)
                if frame is not None:
                    image_id = f"{image_id}?frame={frame}"
            image = await loader.load_image(image_id)
        except ImageLoaderError as exc:
            print(f"imageloader info: {describe_error(exc)}", file=sys.stderr)
            return 1
        modules = loader.metadata.modules(image_id)
    document = {
        "image_id": image_id,
        "image": image_fields(image),
        "modules": {name: module_to_json(module) for name, module in modules.items()},
    }
    print(json.dumps(document, indent=None if compact else 2))
    return 0
