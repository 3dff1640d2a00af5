"""``imageloader demo``: pydicom's sample images through the whole pipeline, and a montage.

With no server, it loads the sample files that ship with pydicom (scheme dispatch,
decode pool, cache), prints a table of what it loaded and writes a montage PNG.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ImageLoaderError
from ..image import Image
from ..loader import ImageLoader

__all__ = ["DEMO_FILES", "add_demo_parser", "demo_image_ids", "run_demo"]

# One per transfer syntax and colour model, all inside pydicom's wheel (no download).
DEMO_FILES = [
    ("CT_small.dcm", None),
    ("MR_small_bigendian.dcm", None),
    ("image_dfl.dcm", None),
    ("MR_small_RLE.dcm", None),
    ("JPGExtended.dcm", None),
    ("MR_small_jpeg_ls_lossless.dcm", None),
    ("MR_small_jp2klossless.dcm", None),
    ("JPEG2000.dcm", None),
    ("SC_rgb_jpeg_dcmtk.dcm", None),
    ("SC_rgb_rle.dcm", None),
    ("examples_palette.dcm", None),
    ("rtdose.dcm", 15),
    ("examples_ybr_color.dcm", 30),
]


def add_demo_parser(sub: Any, **common: Any) -> None:
    """The ``demo`` subcommand's arguments."""
    p = sub.add_parser(
        "demo",
        help="load pydicom's sample images and write a montage",
        description="Load the sample images that ship with pydicom through the whole\n"
        "pipeline (no server needed), print what was loaded and write a montage PNG.",
        **common,
    )
    p.add_argument("--output", type=Path, default=Path("demo-output/montage.png"),
                   metavar="PNG", help="where the montage goes (default: %(default)s)")  # fmt: skip
    p.add_argument("--workers", type=int, default=None, metavar="N", help="decode processes")


def demo_image_ids() -> list[str]:
    """``dicomfile:`` imageIds of pydicom's sample files, every frame of the multi-frame ones."""
    import pydicom

    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    ids = []
    for name, frames in DEMO_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if frames is None:
            ids.append(f"dicomfile:{path}")
        else:
            ids.extend(f"dicomfile:{path}?frame={n}" for n in range(1, frames + 1))
    return ids


def _syntax_name(uid: str | None) -> str:
    if uid is None:
        return "-"
    from ..decode.syntaxes import SYNTAXES

    known = SYNTAXES.get(uid)
    return known.name if known is not None else uid


def _row(image: Image) -> str:
    name = image.image_id.rsplit("/", 1)[-1]
    shape = "x".join(map(str, image.pixel_data.shape))
    return (
        f"{name:<34} {_syntax_name(image.transfer_syntax_uid)[:34]:<34} {shape:<11} "
        f"{image.data_type:<8} {image.min_pixel_value:>10.6g} {image.max_pixel_value:>10.6g} "
        f"{image.decode_time_ms:>8.2f}"
    )


async def run_demo(output: Path, workers: int | None) -> int:
    """Load the sample images, print a table, write the montage; returns the exit code."""
    from ..render import encode_png, montage, to_display

    ids = demo_image_ids()
    if not ids:
        print("no pydicom sample files found", file=sys.stderr)
        return 1
    started = time.perf_counter()
    async with ImageLoader(max_web_workers=workers) as loader:
        await loader.decode_pool.warm()
        warm = time.perf_counter() - started
        results = await loader.load_and_cache_images(ids, return_exceptions=True)
        elapsed = time.perf_counter() - started - warm
        pool = loader.decode_pool
        print(
            f"{'imageId':<34} {'transfer syntax':<34} {'shape':<11} {'dtype':<8} "
            f"{'min':>10} {'max':>10} {'decode ms':>8}"
        )
        tiles = []
        failures = 0
        seen_files: set[str] = set()
        for result in results:
            if isinstance(result, ImageLoaderError):
                failures += 1
                print(f"FAILED {result}")
                continue
            print(_row(result))
            source = result.image_id.split("?", 1)[0]
            if source not in seen_files:
                seen_files.add(source)
                tiles.append(to_display(result))
        print(
            f"\n{len(results) - failures} images from {len(seen_files)} files in "
            f"{elapsed * 1000:.0f} ms with {pool.max_workers} decode worker(s) "
            f"(pool start {warm * 1000:.0f} ms); cache {loader.cache.size_bytes / 1e6:.1f} MB"
        )
    if tiles:

        def write() -> None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_bytes(encode_png(montage(tiles, columns=5)))

        await asyncio.to_thread(write)
        print(f"montage: {output}")
    return 1 if failures else 0
