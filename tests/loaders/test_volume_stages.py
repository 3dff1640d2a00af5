"""Volume stages (Cornerstone's progressive, interleaved retrieve): order, events, decode
levels placed enlarged and then replaced, the final volume equal to an unstaged one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imageloader import ImageLoader
from imageloader import events as ev
from imageloader.volume import INTERLEAVED, VolumeStage
from tests.loaders.test_volume import SLICES, write_series

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def series(tmp_path: Path) -> list[str]:
    return [f"dicomfile:{p}" for p in write_series(tmp_path)]


async def plain_volume(series: list[str]) -> np.ndarray[Any, Any]:
    async with ImageLoader(max_web_workers=0) as loader:
        volume = await loader.create_and_cache_volume("plain", series)
        await volume.loaded()
        return volume.data.copy()


async def test_interleaved_loads_every_fourth_slice_first(series: list[str]) -> None:
    expected = await plain_volume(series)
    stages: list[dict[str, Any]] = []
    placed: list[str] = []
    async with ImageLoader(max_web_workers=1) as loader:
        loader.events.on(ev.IMAGE_RETRIEVAL_STAGE, lambda e: stages.append(e.detail))
        loader.events.on(
            ev.IMAGE_LOAD_PROGRESS, lambda e: placed.append(e.detail["slice_image_id"])
        )
        volume = await loader.create_and_cache_volume("staged", series, stages="interleaved")
        await volume.loaded()
        order = [volume.image_ids.index(i) for i in placed]
    assert [s["stage_id"] for s in stages] == ["quarter", "half", "final"]
    assert [s["number_of_images"] for s in stages] == [3, 3, 6]
    assert all(s["number_of_failures"] == 0 for s in stages)
    assert stages[0]["start_duration_ms"] <= stages[-1]["start_duration_ms"]
    # Scan-order slices 3, 7, 11 first, then 1, 5, 9, then the rest.
    assert sorted(order[:3]) == [3, 7, 11] and sorted(order[3:6]) == [1, 5, 9]
    assert sorted(order[6:]) == [0, 2, 4, 6, 8, 10]
    np.testing.assert_array_equal(volume.data, expected)
    assert volume.loaded_count == SLICES and not volume.provisional


async def test_a_preview_stage_at_a_decode_level_is_replaced_in_full(series: list[str]) -> None:
    expected = await plain_volume(series)
    preview = VolumeStage("preview", positions=(0.5, 0, -1), decode_level=2)
    seen: dict[str, Any] = {}

    def on_stage(event: ev.Event) -> None:
        volume = event.detail["volume"]
        if event.detail["stage_id"] == "preview":
            seen["provisional"] = set(volume.provisional)
            seen["loaded"] = volume.loaded_count
            seen["middle"] = volume.data[SLICES // 2].copy()

    async with ImageLoader(max_web_workers=0) as loader:
        loader.events.on(ev.IMAGE_RETRIEVAL_STAGE, on_stage)
        volume = await loader.create_and_cache_volume("preview", series, stages=[preview])
        await volume.loaded()
        small = await loader.load_image(volume.image_ids[SLICES // 2], decode_level=2)
    # After the preview: the middle, first and last slices, enlarged, none counted loaded.
    assert seen["provisional"] == {0, SLICES // 2, SLICES - 1} and seen["loaded"] == 0
    enlarged = np.repeat(np.repeat(small.pixel_data, 4, axis=0), 4, axis=1)
    np.testing.assert_array_equal(seen["middle"], enlarged)
    assert not np.array_equal(seen["middle"], expected[SLICES // 2])
    # Then everything at full size.
    np.testing.assert_array_equal(volume.data, expected)
    assert volume.loaded_count == SLICES and not volume.provisional


async def test_each_stage_has_its_request_type(
    series: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, str, int]] = []
    async with ImageLoader(max_web_workers=0) as loader:
        original = loader.iter_images

        def recording(ids: Any, **options: Any) -> Any:
            ids = list(ids)
            calls.append((len(ids), str(options["request_type"]), options["decode_level"]))
            return original(ids, **options)

        monkeypatch.setattr(loader, "iter_images", recording)
        stages = [
            VolumeStage("first", positions=(0,), request_type="interaction"),
            VolumeStage("thumbs", decimate=2, request_type="thumbnail", decode_level=1),
        ]
        volume = await loader.create_and_cache_volume(
            "typed", series, stages=stages, request_type="prefetch"
        )
        await volume.loaded()
    # The thumbnails skip slice 0 (already loaded in full); "final" loads the rest in full.
    assert calls == [
        (1, "interaction", 0),
        (SLICES // 2 - 1, "thumbnail", 1),
        (SLICES - 1, "prefetch", 0),
    ]


async def test_bad_stages_are_refused(series: list[str]) -> None:
    async with ImageLoader(max_web_workers=0) as loader:
        with pytest.raises(ValueError, match="unknown stages 'zigzag'"):
            await loader.create_and_cache_volume("a", series, stages="zigzag")
        with pytest.raises(ValueError, match="decode_level must be an integer"):
            await loader.create_and_cache_volume(
                "b", series, stages=[VolumeStage("x", positions=(0,), decode_level=9)]
            )
        with pytest.raises(ValueError, match="must be a VolumeStage"):
            await loader.create_and_cache_volume("c", series, stages=["quarter"])  # type: ignore[list-item]


def test_interleaved_positions() -> None:
    assert [s.indices(10) for s in INTERLEAVED] == [[3, 7], [1, 5, 9]]
    assert VolumeStage("p", positions=(0.5, 0, -1, 99, -99)).indices(10) == [5, 0, 9]
