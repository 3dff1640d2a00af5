"""``iter_image_stages``: an HTJ2K frame at a low decode level while its bytes still
arrive, then in full; byte ranges where the server answers 206; one image otherwise.

A local server (fault injection, not Orthanc) drips the frame 2 KiB at a time, or
honours ``Range``; the real Orthanc serves what it supports (its 1.10 refuses HTJ2K
frames as stored, and streams JPEG-LS: one final image, equal to a plain load).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imageloader import ImageLoader
from imageloader import events as ev
from tests.corpus import CORNERSTONE
from tests.loaders.fakeweb import fake_dicomweb
from tests.support.encoders import make_variants

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def htj2k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    [variant] = make_variants(
        tmp_path_factory.mktemp("stages"),
        ct=CORNERSTONE / "CTImage.dcm",
        rgb=CORNERSTONE / "TestPattern_RGB.dcm",
        names={"ct-htj2k-rpcl"},
    )
    return variant.path


async def test_a_dripping_htj2k_frame_sharpens_as_it_arrives(htj2k: Path) -> None:
    async with fake_dicomweb(str(htj2k)) as web:
        web.fault = "drip"
        body_bytes = len(web.frames[0])
        stages: list[dict[str, Any]] = []
        async with ImageLoader(max_web_workers=1) as loader:
            loader.events.on(ev.IMAGE_LOAD_STAGE, lambda e: stages.append(e.detail))
            images, sent_then = [], []
            async for image in loader.iter_image_stages(web.image_id(), levels=(3, 1)):
                images.append(image)
                sent_then.append(web.sent)
            plain = await loader.load_image(web.image_id())
            assert loader.cache.get_image(web.image_id()) is images[-1]
    assert [i.decode_level for i in images] == [3, 1, 0]
    assert [i.rows for i in images] == [64, 256, 512]
    # The low levels came while the frame was still arriving, the coarsest first.
    assert sent_then[0] < sent_then[1] < body_bytes
    assert stages[0]["bytes_received"] < body_bytes / 4
    assert [s["decode_level"] for s in stages] == [3, 1]
    np.testing.assert_array_equal(images[-1].pixel_data, plain.pixel_data)
    assert web.hits["frames"] == 1  # one fetch for every stage (the plain load: cached)
    # Each stage is its level complete: what the whole codestream gives at that level.
    async with ImageLoader(max_web_workers=0) as other:
        for image in images[:-1]:
            whole = await other.load_image(f"dicomfile:{htj2k}", decode_level=image.decode_level)
            np.testing.assert_array_equal(image.pixel_data, whole.pixel_data)
    # A stage is close to the full frame downsampled.
    coarse = images[0].pixel_data.astype(float)
    full = plain.pixel_data.astype(float).reshape(64, 8, 64, 8).mean(axis=(1, 3))
    assert np.corrcoef(coarse.ravel(), full.ravel())[0, 1] > 0.97


async def test_byte_ranges_where_the_server_answers_206(htj2k: Path) -> None:
    async with fake_dicomweb(str(htj2k)) as web:
        web.fault = "range"
        async with ImageLoader(max_web_workers=1) as loader:
            images = [
                image async for image in loader.iter_image_stages(web.image_id(), range_bytes=16384)
            ]
            plain = await loader.load_image(web.image_id(), decode_level=0)
    assert web.ranges == ["bytes=0-16383", "bytes=16384-"]
    assert [i.decode_level for i in images] == [2, 0]
    np.testing.assert_array_equal(images[-1].pixel_data, plain.pixel_data)


async def test_a_server_that_ignores_range_gives_the_stream(htj2k: Path) -> None:
    # No fault: the server ignores Range and answers 200.
    async with fake_dicomweb(str(htj2k)) as web, ImageLoader(max_web_workers=1) as loader:
        images = [i async for i in loader.iter_image_stages(web.image_id(), range_bytes=4096)]
    assert images[-1].decode_level == 0 and images[-1].rows == 512
    assert web.hits["frames"] == 1


async def test_other_syntaxes_give_one_final_image() -> None:
    path = CORNERSTONE / "CTImage.dcm_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm"
    async with fake_dicomweb(str(path)) as web:
        web.fault = "drip"
        async with ImageLoader(max_web_workers=1) as loader:
            images = [i async for i in loader.iter_image_stages(web.image_id())]
            again = [i async for i in loader.iter_image_stages(web.image_id())]
    assert [i.decode_level for i in images] == [0]
    assert again == images[-1:]  # cached: at once, no fetch
    assert web.hits["frames"] == 1


async def test_on_orthanc_a_jpeg_ls_frame_is_one_final_image(orthanc: Any, tmp_path: Path) -> None:
    from tests.support.encoders import write_with_fresh_uids

    source = CORNERSTONE / "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm"
    path = tmp_path / "ct.dcm"
    ds = write_with_fresh_uids(source, path, "image-stages-orthanc")
    orthanc.upload(path)
    image_id = (
        f"wadors:{orthanc.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/"
        f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1"
    )
    async with ImageLoader(max_web_workers=1) as loader:
        images = [i async for i in loader.iter_image_stages(image_id)]
    async with ImageLoader(max_web_workers=0) as other:
        plain = await other.load_image(f"dicomfile:{source}")
    assert [i.decode_level for i in images] == [0]
    np.testing.assert_array_equal(images[0].pixel_data, plain.pixel_data)


async def test_bad_arguments() -> None:
    async with ImageLoader(max_web_workers=0) as loader:
        with pytest.raises(ValueError, match="decode_level must be an integer"):
            [i async for i in loader.iter_image_stages("wadors:http://x/frames/1", levels=(9,))]
        with pytest.raises(ValueError, match="range_bytes must be positive"):
            [i async for i in loader.iter_image_stages("wadors:http://x/frames/1", range_bytes=0)]
