"""An asyncio service loading images on demand: one loader, many concurrent requests.

    python examples/async_service.py                       # pydicom's sample files
    python examples/async_service.py --dicomweb URL --study UID

What a service gets from one shared :class:`imageloader.ImageLoader`:

- callers asking for the same image at once share one load (one fetch, one decode);
- a second request for an image is a cache hit (microseconds, no I/O);
- background prefetch runs at PREFETCH priority and never delays an interactive
  request, which is served first;
- every outcome is an event (``loader.events``), and every failure a typed error.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import pydicom

from imageloader import ImageLoader, events
from imageloader.dicomweb import image_ids_for_study
from imageloader.errors import ImageLoaderError

SAMPLES = Path(pydicom.__file__).parent / "data" / "test_files"
LOCAL = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "rtdose.dcm"]


async def handle(loader: ImageLoader, image_id: str) -> str:
    """One user request: load (interaction priority) and describe the image."""
    started = time.perf_counter()
    try:
        image = await loader.load_and_cache_image(image_id)
    except ImageLoaderError as exc:
        return f"error {type(exc).__name__}: {exc.message}"
    ms = (time.perf_counter() - started) * 1000
    name = image_id.rsplit("/", 1)[-1][-40:]
    return f"{name}: {image.rows}x{image.columns} {image.data_type} in {ms:.1f} ms"


async def main(dicomweb: str | None, study: str | None) -> None:
    async with ImageLoader(max_web_workers=2) as loader:
        loaded = []
        loader.events.on(events.IMAGE_LOADED, lambda event: loaded.append(event.image_id))
        if dicomweb and study:
            ids = await image_ids_for_study(loader, dicomweb, study)
        else:
            ids = [f"dicomfile:{SAMPLES / name}" for name in LOCAL]
        ids.append(f"dicomfile:{SAMPLES / 'no-such-file.dcm'}")  # failures are typed

        # Ten users ask for the same image at once: one load serves them all.
        first = await asyncio.gather(*(handle(loader, ids[0]) for _ in range(10)))
        print(f"10 concurrent requests for one image: {len(loaded)} load; {first[0]}")
        # Background prefetch of the rest, at a priority below any user request.
        await loader.load_and_cache_images(ids, request_type="prefetch", return_exceptions=True)
        for image_id in ids:
            print(await handle(loader, image_id))
        print(
            f"{len(loaded)} loads for {len(ids) + 10} requests; "
            f"cache holds {loader.cache.size_bytes / 1e6:.2f} MB"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dicomweb", help="DICOMweb root URL")
    parser.add_argument("--study", help="StudyInstanceUID")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.dicomweb, args.study))
    except ImageLoaderError as exc:  # e.g. a study the server does not hold
        raise SystemExit(f"async_service: {exc}") from None
