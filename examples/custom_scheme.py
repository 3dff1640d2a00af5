"""A loader for a scheme of your own: ``npy:/path/file.npy`` (a NumPy array as an image).

    python examples/custom_scheme.py [FILE.npy]

A loader is one coroutine, ``async def load(image_id, ctx) -> Image``, registered
for its scheme. Everything else comes with the loader: the cache, the in-flight
table (ten callers, one read), request priorities, events and the access policy.
Two rules make it a good citizen: never block the event loop (file reads go to a
thread), and raise imageloader's typed errors, naming the imageId.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np

from imageloader import Image, ImageLoader, LoadContext
from imageloader.errors import DecodeError, NotFoundError
from imageloader.registry import split_scheme

READS = 0


async def load_npy(image_id: str, ctx: LoadContext) -> Image:
    """The ``npy:`` loader."""
    global READS
    _, path = split_scheme(image_id)
    # The access policy's file roots apply to this scheme too (a thread: it stats files).
    real = await asyncio.to_thread(ctx.access.resolve_path, path, image_id=image_id)
    READS += 1
    try:
        array = await asyncio.to_thread(np.load, real, allow_pickle=False)
    except FileNotFoundError as exc:
        raise NotFoundError("no such file", image_id=image_id) from exc
    except ValueError as exc:
        raise DecodeError(f"not a NumPy array file: {exc}", image_id=image_id) from exc
    return Image.from_array(image_id, array)


async def main(path: Path) -> None:
    async with ImageLoader(max_web_workers=0) as loader:
        loader.register_image_loader("npy", load_npy)
        image_id = f"npy:{path}"
        images = await asyncio.gather(*(loader.load_and_cache_image(image_id) for _ in range(10)))
        print(f"{image_id} -> {images[0]!r}")
        print(f"10 concurrent loads, {READS} file read; window {images[0].window_width:g}")
        try:
            await loader.load_image(f"npy:{path.with_name('missing.npy')}")
        except NotFoundError as exc:
            print(f"missing file -> {type(exc).__name__}: {exc.message}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        if len(sys.argv) > 1:
            target = Path(sys.argv[1]).resolve()
        else:
            target = Path(folder) / "gradient.npy"
            np.save(target, np.add.outer(np.arange(64), np.arange(64)).astype(np.float32))
        asyncio.run(main(target))
