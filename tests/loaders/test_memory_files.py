"""``loader.files``: DICOM Part 10 files in memory load like any ``dicomfile:`` id.

Every check compares with the same bytes loaded from disk through ``dicomfile:<path>``,
so "loads like any dicomfile: id" is measured, not assumed.
"""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import numpy as np
import pytest

from imageloader import AccessPolicy, ImageLoader, Limits
from imageloader.errors import (
    AccessDeniedError,
    DecodeError,
    ImageTooLargeError,
    NotFoundError,
)
from tests.dicom._dicomdata import data_file
from tests.integrations.series import make_study

CORPUS = Path(__file__).resolve().parents[1] / "data" / "cornerstone"
JPEG_LS = CORPUS / "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm"
MULTIFRAME = Path(data_file("emri_small.dcm"))  # 10 frames
CT_BYTES = JPEG_LS.read_bytes()
MF_BYTES = MULTIFRAME.read_bytes()


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


@pytest.fixture
async def loader() -> ImageLoader:
    async with ImageLoader(max_web_workers=1) as loader:
        yield loader  # type: ignore[misc]


def _same(a: object, b: object) -> None:
    for field in ("rows", "columns", "slope", "intercept", "min_pixel_value", "max_pixel_value"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.pixel_data.dtype == b.pixel_data.dtype  # type: ignore[attr-defined]
    assert np.array_equal(a.pixel_data, b.pixel_data)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "BytesIO", "open file"])
async def test_every_form_of_data_loads_as_the_file_on_disk(loader: ImageLoader, kind: str) -> None:
    raw = CT_BYTES
    with open(JPEG_LS, "rb") as opened:  # noqa: ASYNC230 - opened for the test, not blocking
        data = {
            "bytes": raw,
            "bytearray": bytearray(raw),
            "memoryview": memoryview(raw),
            "BytesIO": io.BytesIO(raw),
            "open file": opened,
        }[kind]
        image_id = loader.files.add(data)
    assert image_id == "dicomfile:0"
    assert image_id in loader.files and len(loader.files) == 1
    assert loader.files.size_bytes == len(raw)
    from_memory = await loader.load_image(image_id)
    from_disk = await loader.load_image(f"dicomfile:{JPEG_LS}")
    _same(from_memory, from_disk)
    assert from_memory.image_id == image_id
    assert (
        loader.metadata.modules(image_id).keys()
        == loader.metadata.modules(f"dicomfile:{JPEG_LS}").keys()
    )


async def test_a_bytearray_changed_after_add_does_not_change_the_file(
    loader: ImageLoader,
) -> None:
    raw = bytearray(CT_BYTES)
    image_id = loader.files.add(raw)
    raw[:] = b"\0" * len(raw)
    image = await loader.load_image(image_id)
    _same(image, await loader.load_image(f"dicomfile:{JPEG_LS}"))


async def test_every_frame_of_a_multiframe_file_and_its_metadata(loader: ImageLoader) -> None:
    image_id = loader.files.add(MF_BYTES)
    for n in range(1, 11):
        _same(
            await loader.load_and_cache_image(f"{image_id}?frame={n}"),
            await loader.load_image(f"dicomfile:{MULTIFRAME}?frame={n}"),
        )
    assert loader.builtin_loader("dicomfile").objects.loads == 2  # type: ignore[attr-defined]
    # Metadata alone: no pixels decoded, the same modules as from the file's header.
    fresh = loader.files.add(MF_BYTES)
    await loader.load_metadata([f"{fresh}?frame=3"])
    await loader.load_metadata([f"dicomfile:{MULTIFRAME}?frame=3"])
    memory = loader.metadata.modules(f"{fresh}?frame=3")
    disk = loader.metadata.modules(f"dicomfile:{MULTIFRAME}?frame=3")
    assert memory["imagePlaneModule"] == disk["imagePlaneModule"]
    assert memory["imagePixelModule"] == disk["imagePixelModule"]


async def test_a_frame_past_the_end_is_not_found_naming_the_range(loader: ImageLoader) -> None:
    single = loader.files.add(CT_BYTES)
    with pytest.raises(NotFoundError, match=r"frame 2 of 1 does not exist") as info:
        await loader.load_image(f"{single}?frame=2")
    assert info.value.image_id == f"{single}?frame=2"
    multi = loader.files.add(MF_BYTES)
    with pytest.raises(
        NotFoundError, match=r"frame 11 of 10 does not exist \(frames are 1\.\.10\)"
    ):
        await loader.load_metadata([f"{multi}?frame=11"])
    # The same wording for a file on disk.
    with pytest.raises(NotFoundError, match=r"frame 2 of 1 does not exist"):
        await loader.load_image(f"dicomfile:{JPEG_LS}?frame=2")


async def test_a_volume_of_files_in_memory_is_the_volume_of_the_files(
    loader: ImageLoader, tmp_path: Path
) -> None:
    study = make_study(tmp_path, "memory-volume")
    # Added in reverse order: the volume sorts by position, not by id.
    ids = [loader.files.add(_read(p)) for p in reversed(study.ct_files)]
    from_memory = await loader.create_and_cache_volume("memory", ids)
    await from_memory.loaded()
    from_disk = await loader.create_and_cache_volume(
        "disk", [f"dicomfile:{p}" for p in study.ct_files]
    )
    await from_disk.loaded()
    assert from_memory.data.dtype == from_disk.data.dtype
    assert np.array_equal(from_memory.data, from_disk.data)
    assert from_memory.spacing == from_disk.spacing
    assert np.allclose(from_memory.origin, from_disk.origin)


async def test_remove_releases_the_file_its_frames_and_metadata(loader: ImageLoader) -> None:
    image_id = loader.files.add(MF_BYTES)
    keep = loader.files.add(CT_BYTES)
    frames = [f"{image_id}?frame={n}" for n in (1, 2, 3)]
    await loader.load_and_cache_images(frames)
    await loader.load_and_cache_image(keep)
    dicomfile = loader.builtin_loader("dicomfile")
    assert len(dicomfile.objects) == 2  # type: ignore[attr-defined]
    assert all(f in loader.cache and f in loader.metadata.store for f in frames)

    assert loader.files.remove(f"{image_id}?frame=2")  # any frame's id names the file
    assert image_id not in loader.files and len(loader.files) == 1
    assert loader.files.size_bytes == len(CT_BYTES)
    assert not any(f in loader.cache or f in loader.metadata.store for f in frames)
    assert len(dicomfile.objects) == 1  # type: ignore[attr-defined]
    assert keep in loader.cache  # the other file is untouched
    for gone in (image_id, frames[0]):
        with pytest.raises(NotFoundError, match=r"no file dicomfile:0 in loader\.files") as info:
            await loader.load_image(gone)
        assert info.value.image_id == gone
    with pytest.raises(NotFoundError):
        await loader.load_metadata([frames[1]])
    assert frames[0] not in loader.cache
    # Removing again, or what was never added, is False; numbers are never reused.
    assert not loader.files.remove(image_id)
    assert not loader.files.remove("dicomfile:99")
    assert not loader.files.remove(f"dicomfile:{JPEG_LS}")
    assert loader.files.add(CT_BYTES) == "dicomfile:2"


async def test_a_file_removed_while_it_loads_is_not_cached(loader: ImageLoader) -> None:
    image_id = loader.files.add(CT_BYTES)
    load = asyncio.ensure_future(loader.load_and_cache_image(image_id))
    await asyncio.sleep(0)  # the load has started: its parse is under way
    assert loader.is_loading(image_id)
    assert loader.files.remove(image_id)
    with pytest.raises(NotFoundError):
        await load
    assert image_id not in loader.cache
    assert len(loader.builtin_loader("dicomfile").objects) == 0  # type: ignore[attr-defined]


async def test_junk_and_truncated_bytes_are_decode_errors(loader: ImageLoader) -> None:
    junk = loader.files.add(os.urandom(5000))
    with pytest.raises(DecodeError, match="not a DICOM Part 10 object") as info:
        await loader.load_image(junk)
    assert info.value.image_id == junk
    empty = loader.files.add(b"")
    with pytest.raises(DecodeError):
        await loader.load_image(empty)
    cut = loader.files.add(CT_BYTES[:40_000])
    with pytest.raises(DecodeError) as cut_info:
        await loader.load_image(cut)
    assert cut_info.value.image_id == cut
    # The loader goes on serving good files.
    good = loader.files.add(CT_BYTES)
    assert (await loader.load_image(good)).rows == 512


async def test_the_bytes_held_are_bounded() -> None:
    size = len(CT_BYTES)
    async with ImageLoader(max_web_workers=0, limits=Limits(max_files_bytes=2 * size)) as loader:
        loader.files.add(CT_BYTES)
        second = loader.files.add(io.BytesIO(CT_BYTES))
        with pytest.raises(ImageTooLargeError, match="max_files_bytes"):
            loader.files.add(CT_BYTES)
        with pytest.raises(ImageTooLargeError, match="max_files_bytes"):
            loader.files.add(memoryview(b"x"))
        assert len(loader.files) == 2 and loader.files.size_bytes == 2 * size
        loader.files.remove(second)
        loader.files.add(bytearray(CT_BYTES))  # room again
        assert loader.files.size_bytes == 2 * size


class _Endless(io.RawIOBase):
    """A stream that never ends (an upload that does not stop); counts what it gave."""

    def __init__(self) -> None:
        self.given = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = 1 << 20 if size is None or size < 0 else size
        self.given += size
        return b"\0" * size


async def test_an_endless_stream_is_refused_after_the_limit_not_read_to_the_end() -> None:
    limit = 8 << 20
    async with ImageLoader(max_web_workers=0, limits=Limits(max_files_bytes=limit)) as loader:
        stream = _Endless()
        with pytest.raises(ImageTooLargeError):
            loader.files.add(stream)
        assert limit < stream.given <= limit + (2 << 20)
        assert len(loader.files) == 0 and loader.files.size_bytes == 0


async def test_what_is_not_data_is_a_type_error(loader: ImageLoader) -> None:
    with pytest.raises(TypeError, match="dicomfile:<path>"):
        loader.files.add(str(JPEG_LS))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not int"):
        loader.files.add(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="read str"):
        loader.files.add(io.StringIO("text"))  # type: ignore[arg-type]
    assert len(loader.files) == 0


async def test_a_relative_path_of_digits_is_written_with_dot_slash(
    loader: ImageLoader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "0", CT_BYTES)
    monkeypatch.chdir(tmp_path)
    image = await loader.load_image("dicomfile:./0")
    assert image.rows == 512
    # dicomfile:0 is the file in memory numbered 0, and there is none.
    with pytest.raises(NotFoundError, match=r"loader\.files"):
        await loader.load_image("dicomfile:0")


async def test_a_policy_without_file_roots_serves_files_in_memory_only() -> None:
    async with ImageLoader(max_web_workers=0, access=AccessPolicy(schemes={"dicomfile"})) as loader:
        image_id = loader.files.add(CT_BYTES)
        assert (await loader.load_image(image_id)).rows == 512
        with pytest.raises(AccessDeniedError):
            await loader.load_image(f"dicomfile:{JPEG_LS}")


async def test_files_of_one_loader_are_not_another_loaders(loader: ImageLoader) -> None:
    image_id = loader.files.add(CT_BYTES)
    async with ImageLoader(max_web_workers=0) as other:
        with pytest.raises(NotFoundError, match="another loader"):
            await other.load_image(image_id)


async def test_closing_the_loader_releases_its_files() -> None:
    loader = ImageLoader(max_web_workers=0)
    files = loader.files
    files.add(CT_BYTES)
    await loader.aclose()
    assert len(files) == 0 and files.size_bytes == 0


async def test_a_service_adding_and_removing_files_holds_nothing_afterwards(
    loader: ImageLoader,
) -> None:
    raw = CT_BYTES
    for _ in range(300):
        image_id = loader.files.add(raw)
        await loader.load_and_cache_image(image_id)
        assert loader.files.remove(image_id)
    dicomfile = loader.builtin_loader("dicomfile")
    assert len(loader.files) == 0 and loader.files.size_bytes == 0
    assert len(loader.cache) == 0 and len(loader.metadata.store) == 0
    assert len(dicomfile.objects) == 0  # type: ignore[attr-defined]
