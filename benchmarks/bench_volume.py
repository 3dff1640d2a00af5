"""Peak memory while building a volume: the volume's bytes plus a small constant.

Writes a series of 512x512 16-bit CT slices (explicit VR little endian, distinct
content per slice), then measures with tracemalloc the peak of the main process's
allocations while ``create_and_cache_volume`` runs to completion, against the
volume's own size. Decoding happens in the worker processes; what the main process
holds beyond the volume is frames in flight (request-pool bounded) and parsed files.

Run: ``python -m benchmarks.bench_volume [--slices N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from imageloader import ImageLoader


def write_series(folder: Path, slices: int) -> list[str]:
    """``slices`` CT files, content varying along z, in one series."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[-256:256, -256:256]
    body = (x**2 / 200**2 + y**2 / 150**2) < 1
    study, series = generate_uid(), generate_uid()
    ids = []
    for k in range(slices):
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality = "CT"
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelSpacing = [0.7, 0.7]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-179.0, -179.0, float(k) * 1.25]
        ds.InstanceNumber = k + 1
        pixels = np.where(body, 1000 + 40 * np.sin(x / 20 + k / 10), 0)
        pixels = pixels + rng.normal(0, 10, pixels.shape)
        ds.PixelData = pixels.astype(np.int16).tobytes()
        path = folder / f"{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        ids.append(f"dicomfile:{path}")
    return ids


async def measure(ids: list[str], workers: int) -> dict[str, float]:
    async with ImageLoader(max_web_workers=workers) as loader:
        await loader.decode_pool.warm()
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        volume = await loader.create_and_cache_volume("bench", ids)
        await volume.loaded()
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        volume_bytes = volume.size_in_bytes
    overhead = peak - baseline - volume_bytes
    return {
        "slices": len(ids),
        "volume_mb": volume_bytes / 1e6,
        "peak_mb": (peak - baseline) / 1e6,
        "overhead_mb": overhead / 1e6,
        "peak_over_volume": (peak - baseline) / volume_bytes,
        "seconds": elapsed,
        "slices_per_s": len(ids) / elapsed,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        ids = write_series(Path(folder), args.slices)
        result = asyncio.run(measure(ids, args.workers))
    json.dump(result, sys.stdout, indent=2)
    print()
    return result


if __name__ == "__main__":
    main()
