"""Bulk prefetch into .npy volumes for an ML pipeline, then read them back.

    python examples/bulk_prefetch.py --output out/                       # local samples
    python examples/bulk_prefetch.py --output out/ --dicomweb URL --study UID

The same as ``imageloader prefetch --output``, from Python: every frame loads at
PREFETCH priority, each series becomes ``out/<SeriesInstanceUID>.npy`` (frames in
scan order) with ``out/<SeriesInstanceUID>.json`` (imageIds, geometry, metadata
modules). Run it again: complete series are skipped, an interrupted one resumes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np
import pydicom

from imageloader import ImageLoader
from imageloader.dicomweb import image_ids_for_study
from imageloader.errors import ImageLoaderError
from imageloader.output import PrefetchReport, prefetch

SAMPLES = Path(pydicom.__file__).parent / "data" / "test_files"


def local_ids() -> list[str]:
    """A CT slice, and the 15 frames of an RT dose grid (listed in reverse on purpose)."""
    frames = [f"dicomfile:{SAMPLES / 'rtdose.dcm'}?frame={n}" for n in range(15, 0, -1)]
    return [f"dicomfile:{SAMPLES / 'CT_small.dcm'}", *frames]


async def run(output: Path, dicomweb: str | None, study: str | None) -> PrefetchReport:
    async with ImageLoader() as loader:
        if dicomweb and study:
            ids = await image_ids_for_study(loader, dicomweb, study)
        else:
            ids = local_ids()
        return await prefetch(loader, ids, output=output)


def show(output: Path, report: PrefetchReport) -> int:
    """What a training script does with the output: read manifests, memory-map volumes."""
    print(
        f"{report.loaded} loaded, {report.skipped} skipped, {len(report.failures)} failed "
        f"in {report.seconds:.2f} s"
    )
    for manifest in sorted(output.glob("*.json")):
        document = json.loads(manifest.read_text())
        if document["layout"] == "volume":
            volume = np.load(output / f"{document['series']}.npy", mmap_mode="r")
            spacing = (document["geometry"] or {}).get("spacing")
            print(f"{manifest.stem}: volume {volume.shape} {volume.dtype} spacing {spacing}")
        else:
            print(f"{manifest.stem}: {len(document['files'])} frames of different sizes")
    return 0 if report.ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("prefetch-output"))
    parser.add_argument("--dicomweb", help="DICOMweb root URL")
    parser.add_argument("--study", help="StudyInstanceUID")
    args = parser.parse_args()
    try:
        report = asyncio.run(run(args.output, args.dicomweb, args.study))
    except ImageLoaderError as exc:  # e.g. a study the server does not hold: exit 1
        raise SystemExit(f"bulk_prefetch: {exc}") from None
    raise SystemExit(show(args.output, report))
