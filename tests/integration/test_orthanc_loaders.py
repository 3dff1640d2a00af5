"""``wadors:`` and ``wadouri:`` against a real Orthanc equal ``dicomfile:`` of the same file.

Every uploaded instance with pixel data, every frame: the pixels (values and dtype)
and the main Image fields must match what the local file gives. Instances Orthanc
cannot serve at all (it answers 400 for them) must fail with a typed error naming
the imageId, and still load through wadouri (the whole file).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pydicom
import pytest

from imageloader import Image, ImageLoader
from imageloader.errors import FetchError, ImageLoaderError
from tests.support.dataset import Dataset, DatasetInstance
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def loader() -> AsyncIterator[ImageLoader]:
    async with ImageLoader(max_web_workers=2, max_cache_size_bytes=1 << 30) as il:
        yield il


BIG_ENDIAN = "1.2.840.10008.1.2.2"


def orthanc_garbles(instance: DatasetInstance) -> bool:
    """Orthanc 1.10 transcodes 32-bit big endian frames to explicit little endian wrongly.

    Seen here: rtdose_expb*.dcm (BitsAllocated 32) asked for with
    ``transfer-syntax=1.2.840.10008.1.2.1`` come back neither little- nor big-endian
    values of the stored ones (its 16-bit transcodes are right). With
    ``transfer-syntax=*`` Orthanc answers 500 for big endian objects, so there is no
    way to get the stored bytes through WADO-RS: a server bug, not ours.
    """
    return (
        instance.transfer_syntax_uid == BIG_ENDIAN
        and pydicom.dcmread(instance.path, stop_before_pixels=True).BitsAllocated == 32
    )


# Orthanc 1.10's DICOM JSON for this file has WindowCenter/WindowWidth with no values
# (the file holds "40\\40\\40"), so wadors cannot know its window: a server bug.
EMPTY_WINDOW_IN_ORTHANC_JSON = "pydicom/J2K_pixelrep_mismatch.dcm"


def _ids(server: OrthancServer, instance: DatasetInstance) -> list[tuple[str, str, str, str]]:
    rs = instance.instance_url(server.dicomweb_url)
    uri = instance.wadouri_url(server.wadouri_url)
    return [
        (
            f"{instance.name} frame {n}",
            f"dicomfile:{instance.path}?frame={n}",
            f"wadors:{rs}/frames/{n}",
            f"wadouri:{uri}&frame={n}",
        )
        for n in range(1, instance.number_of_frames + 1)
    ]


def _same(a: Image, b: Image) -> str | None:
    if a.pixel_data.dtype != b.pixel_data.dtype:
        return f"dtype {a.pixel_data.dtype} != {b.pixel_data.dtype}"
    if a.pixel_data.shape != b.pixel_data.shape:
        return f"shape {a.pixel_data.shape} != {b.pixel_data.shape}"
    if not np.array_equal(a.pixel_data, b.pixel_data):
        diff = np.abs(a.pixel_data.astype(np.float64) - b.pixel_data.astype(np.float64))
        return f"pixels differ (max {diff.max():g}, {np.count_nonzero(diff)} values)"
    for name in ("min_pixel_value", "max_pixel_value", "window_center", "window_width",
                 "slope", "intercept", "row_pixel_spacing", "column_pixel_spacing",
                 "photometric_interpretation", "invert", "color"):  # fmt: skip
        if getattr(a, name) != getattr(b, name):
            return f"{name}: {getattr(a, name)!r} != {getattr(b, name)!r}"
    return None


async def test_every_frame_via_wadors_and_wadouri_equals_dicomfile(
    orthanc: OrthancServer, orthanc_dataset: Dataset, loader: ImageLoader
) -> None:
    instances = [i for i in orthanc_dataset if i.has_pixel_data]
    garbled = {i.name for i in instances if orthanc_garbles(i)}
    assert garbled, "expected the 32-bit big endian RTDOSE files in the data set"
    triples = [t for i in instances for t in _ids(orthanc, i)]
    flat = [image_id for triple in triples for image_id in triple[1:]]
    results = await loader.load_and_cache_images(flat, return_exceptions=True)
    by_id = dict(zip(flat, results, strict=True))

    problems: list[str] = []
    local_failures: list[str] = []
    compared = 0
    refused = 0
    for name, local_id, rs_id, uri_id in triples:
        local = by_id[local_id]
        if isinstance(local, ImageLoaderError):
            # A file we cannot decode locally must fail the same typed way remotely.
            local_failures.append(f"{name}: {type(local).__name__}")
            for other in (rs_id, uri_id):
                if not isinstance(by_id[other], ImageLoaderError):
                    problems.append(f"{name} {other[:7]}: loaded, but dicomfile failed: {local}")
            continue
        uri = by_id[uri_id]
        if isinstance(uri, ImageLoaderError):
            problems.append(f"{name} wadouri: {uri}")
        elif (why := _same(local, uri)) is not None:
            problems.append(f"{name} wadouri: {why}")
        rs = by_id[rs_id]
        if isinstance(rs, FetchError) and rs.status == 400:
            refused += 1  # Orthanc cannot serve this object's frames in any form
            assert rs.image_id == rs_id
            continue
        if isinstance(rs, ImageLoaderError):
            problems.append(f"{name} wadors: {rs}")
        elif (why := _same(local, rs)) is not None:
            instance_name = name.split(" frame ")[0]
            window_only = (
                why.startswith("window_") and instance_name == EMPTY_WINDOW_IN_ORTHANC_JSON
            )
            if instance_name not in garbled and not window_only:
                problems.append(f"{name} wadors: {why}")
        else:
            compared += 1
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:40])
    # 447 frames when written; the exact number follows the test data.
    assert compared >= 400, (compared, refused, local_failures)
    print(
        f"\n{compared} frames equal via wadors and wadouri; {refused} refused by Orthanc; "
        f"undecodable locally (and remotely, alike): {local_failures}"
    )
