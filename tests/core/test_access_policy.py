"""AccessPolicy: deny local files by default once restricted; never read devices or FIFOs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from imageloader import AccessPolicy, ImageLoader
from imageloader.errors import AccessDeniedError, NotFoundError
from imageloader.security import MAX_PATH_CHARS

CT = Path(str(get_testdata_file("CT_small.dcm")))


@pytest.mark.parametrize(
    "policy",
    [AccessPolicy(schemes=["nifti", "dicomfile"]), AccessPolicy(hosts=["pacs:8042"])],
    ids=["schemes", "hosts"],
)
@pytest.mark.parametrize("scheme", ["dicomfile:", "nifti:"])
async def test_a_restricted_policy_without_roots_reads_no_local_file(
    policy: AccessPolicy, scheme: str
) -> None:
    image_id = f"{scheme}{CT}" + ("?frame=0" if scheme == "nifti:" else "")
    async with ImageLoader(max_web_workers=0, access=policy) as loader:
        with pytest.raises(AccessDeniedError, match="names no roots") as info:
            await loader.load_image(image_id)
    assert info.value.image_id == image_id


@pytest.mark.parametrize("scheme", ["dicomfile:", "nifti:"])
@pytest.mark.parametrize(
    "policy", [None, AccessPolicy(roots=["/dev", "/tmp"])], ids=["open", "roots"]
)
async def test_devices_and_fifos_are_refused_under_any_policy(
    scheme: str, policy: AccessPolicy | None, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"  # under /tmp, inside the roots
    os.mkfifo(fifo)
    async with ImageLoader(max_web_workers=0, access=policy) as loader:
        for path in ("/dev/zero", str(fifo), str(tmp_path)):
            image_id = f"{scheme}{path}" + ("?frame=0" if scheme == "nifti:" else "")
            with pytest.raises(AccessDeniedError, match="not a regular file"):
                await loader.load_image(image_id)


def test_a_missing_file_passes_the_policy_to_be_not_found_by_its_reader(tmp_path: Path) -> None:
    policy = AccessPolicy(roots=[tmp_path])
    assert policy.resolve_path(tmp_path / "missing.dcm") == tmp_path / "missing.dcm"


async def test_a_missing_file_is_not_found() -> None:
    async with ImageLoader(max_web_workers=0) as loader:
        with pytest.raises(NotFoundError):
            await loader.load_image("dicomfile:/no/such/file.dcm")


def test_a_path_longer_than_path_max_is_refused_at_once() -> None:
    path = "/a" * (MAX_PATH_CHARS // 2 + 1)
    with pytest.raises(AccessDeniedError, match="longer than"):
        AccessPolicy().resolve_path(path)
