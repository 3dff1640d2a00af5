"""A series as a lazy Dask array, loaded by a cluster's workers.

    python examples/dask_series.py                                   # local cluster, samples
    python examples/dask_series.py --dicomweb URL --study UID --series UID
    python examples/dask_series.py --scheduler tcp://host:8786 ...   # an existing cluster

Each Dask worker process keeps one ImageLoader (created on first use), so the
tasks on a worker share its connections and cache. The imageIds are sorted along
the scan axis here, in the client, from the metadata a DICOMweb listing registers
(or a local read); then ``load_series_dask`` builds the lazy array.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import numpy as np
import pydicom
from distributed import Client, LocalCluster

from imageloader import ImageLoader
from imageloader.dicomweb import image_ids_for_series
from imageloader.geometry import slice_geometry
from imageloader.integrations.dask import load_series_dask

SAMPLES = Path(pydicom.__file__).parent / "data" / "test_files"


async def sorted_ids(args: argparse.Namespace) -> tuple[list[str], np.ndarray]:
    """The series' imageIds in scan order, and the volume loaded here, to compare."""
    async with ImageLoader(max_web_workers=0) as loader:
        if args.dicomweb:
            ids = await image_ids_for_series(loader, args.dicomweb, args.study, args.series)
        else:
            ids = [f"dicomfile:{SAMPLES / 'rtdose.dcm'}?frame={n}" for n in range(1, 16)]
        images = await loader.load_and_cache_images(ids)  # registers their metadata too
        planes = {i: loader.metadata.get("imagePlaneModule", i) for i in ids}
        order = list(slice_geometry(planes).image_ids)
        by_id = {image.image_id: image for image in images}
        return order, np.stack([by_id[i].pixel_data for i in order])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scheduler", help="address of a running Dask scheduler")
    parser.add_argument("--dicomweb", help="DICOMweb root URL (with --study and --series)")
    parser.add_argument("--study")
    parser.add_argument("--series")
    args = parser.parse_args()
    ids, local = asyncio.run(sorted_ids(args))
    if args.scheduler:
        client = Client(args.scheduler)
        cluster = None
    else:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)  # fmt: skip
        client = Client(cluster)
    try:
        volume = load_series_dask(ids, batch_size=4)
        print(f"lazy {volume.shape} {volume.dtype} in {volume.npartitions} chunks")
        computed = volume.compute()
        print(f"max {float(volume.max().compute()):.6g}, mean {float(volume.mean().compute()):.6g}")
        print(f"equal to the volume loaded locally: {np.array_equal(computed, local)}")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


if __name__ == "__main__":
    main()
