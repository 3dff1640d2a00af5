"""The prefetch output: series written as soon as complete, failures held back, resumes.

A ``synthetic:{series}/{index}`` scheme makes 4x4 images whose value is the index,
at z = -index (so scan order is the reverse of index order), and can be told to
fail or to wait, which makes the writer's timing observable.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from imageloader import Image, ImageLoader, LoadContext
from imageloader.errors import FetchError, MetadataError
from imageloader.image import PreScale
from imageloader.metadata import (
    GeneralSeriesModule,
    ImagePixelModule,
    ImagePlaneModule,
    ModalityLutModule,
)
from imageloader.output import (
    OutputConflictError,
    PrefetchReport,
    SeriesTracker,
    SeriesWriter,
    prefetch,
)


def modules(image_id: str) -> dict[str, object]:
    series, index = image_id.split(":", 1)[1].split("/")
    return {
        "generalSeriesModule": GeneralSeriesModule(series_instance_uid=series),
        "imagePlaneModule": ImagePlaneModule(
            rows=4,
            columns=4,
            row_cosines=(1.0, 0.0, 0.0),
            column_cosines=(0.0, 1.0, 0.0),
            image_position_patient=(0.0, 0.0, -float(index)),
        ),
    }


class Synthetic:
    """The scheme's loader: counts loads, fails the ids in ``fail``, waits on ``gates``."""

    def __init__(self) -> None:
        self.loads: Counter[str] = Counter()
        self.fail: set[str] = set()
        self.gates: dict[str, asyncio.Event] = {}
        self.settled: list[str] = []

    async def __call__(self, image_id: str, ctx: LoadContext) -> Image:
        self.loads[image_id] += 1
        if image_id in self.gates:
            await asyncio.wait_for(self.gates[image_id].wait(), 10)
        self.settled.append(image_id)
        ctx.metadata.store.add(image_id, modules(image_id))
        if image_id in self.fail:
            raise FetchError("the origin said no", image_id=image_id, status=503)
        index = int(image_id.rsplit("/", 1)[1])
        return Image.from_array(image_id, np.full((4, 4), index, np.int16))


def ids(series: str, count: int) -> list[str]:
    return [f"synthetic:{series}/{n}" for n in range(count)]


async def run(
    out: Path, image_ids: list[str], scheme: Synthetic, *, registered: bool
) -> PrefetchReport:
    async with ImageLoader(max_web_workers=0) as loader:
        loader.register_image_loader("synthetic", scheme)
        if registered:  # as DICOMweb listings do: the series is known before loading
            for image_id in image_ids:
                loader.metadata.store.add(image_id, modules(image_id))
        return await prefetch(loader, image_ids, output=out)


async def test_a_series_is_written_as_soon_as_its_frames_are_in(tmp_path: Path) -> None:
    scheme = Synthetic()
    first, second = ids("1.1", 5), ids("1.2", 5)
    gate = scheme.gates[second[-1]] = asyncio.Event()
    manifest = tmp_path / "1.1.json"

    async def open_gate_when_written() -> None:
        # Series 1.2's last frame is held until series 1.1 is on disk: a writer that
        # waited for the end of the run would never let it through (and time out).
        # (Polls the disk: the file appearing is the very thing observed.)
        for _ in range(1000):
            if await asyncio.to_thread(manifest.exists):
                gate.set()
                return
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(open_gate_when_written())
    report = await run(tmp_path, first + second, scheme, registered=True)
    await watcher
    assert report.ok and report.loaded == 10
    volume = np.load(tmp_path / "1.1.npy")
    assert volume[:, 0, 0].tolist() == [4, 3, 2, 1, 0]  # scan order: z ascending
    document = json.loads(manifest.read_text())
    assert document["geometry"]["spacing"][2] == pytest.approx(1.0)
    assert document["image_ids"] == list(reversed(first))


async def test_unknown_series_are_written_at_the_end(tmp_path: Path) -> None:
    scheme = Synthetic()
    report = await run(tmp_path, ids("2.1", 3) + ids("2.2", 2), scheme, registered=False)
    assert report.ok
    assert sorted(w.series for w in report.written) == ["2.1", "2.2"]
    assert np.load(tmp_path / "2.2.npy").shape == (2, 4, 4)


async def test_a_failed_frame_holds_its_series_back_until_a_rerun(tmp_path: Path) -> None:
    scheme = Synthetic()
    good, bad = ids("3.1", 4), ids("3.2", 4)
    scheme.fail.add(bad[2])
    report = await run(tmp_path, good + bad, scheme, registered=True)
    assert list(report.failures) == [bad[2]]
    assert isinstance(report.errors[bad[2]], FetchError)
    assert report.held == ["3.2"]
    assert (tmp_path / "3.1.npy").exists() and not (tmp_path / "3.2.json").exists()
    assert len(list((tmp_path / ".staging" / "3.2").glob("*.npy"))) == 3

    scheme.fail.clear()
    scheme.loads.clear()
    again = await run(tmp_path, good + bad, scheme, registered=False)
    assert again.ok
    assert dict(scheme.loads) == {bad[2]: 1}  # only the missing frame was loaded
    assert (again.skipped, again.resumed, again.loaded) == (4, 3, 1)
    assert np.load(tmp_path / "3.2.npy")[:, 0, 0].tolist() == [3, 2, 1, 0]
    assert not (tmp_path / ".staging").exists()  # nothing staged any more: no empty folder
    assert again.outcomes == (
        dict.fromkeys(good, "skipped") | dict.fromkeys(bad, "resumed") | {bad[2]: "loaded"}
    )


async def test_a_failure_settling_last_still_lets_the_other_series_be_written(
    tmp_path: Path,
) -> None:
    # Series unknown before loading: nothing can be written until the last load
    # settles, and here the last one to settle is a failure (of another series).
    scheme = Synthetic()
    good, bad = ids("7.1", 3), "synthetic:7.2/0"
    scheme.fail.add(bad)
    gate = scheme.gates[bad] = asyncio.Event()

    async def open_gate_when_the_others_are_in() -> None:
        for _ in range(1000):
            if len(scheme.settled) == len(good):
                gate.set()
                return
            await asyncio.sleep(0.01)

    opener = asyncio.ensure_future(open_gate_when_the_others_are_in())
    report = await run(tmp_path, [*good, bad], scheme, registered=False)
    await opener
    assert scheme.settled[-1] == bad
    assert list(report.failures) == [bad] and report.held == ["7.2"]
    assert [w.series for w in report.written] == ["7.1"]
    assert np.load(tmp_path / "7.1.npy").shape == (3, 4, 4)
    assert report.outcomes == dict.fromkeys(good, "loaded")


async def test_a_successful_run_leaves_no_staging_area(tmp_path: Path) -> None:
    scheme = Synthetic()
    report = await run(tmp_path, ids("8.1", 3), scheme, registered=True)
    assert report.ok and [w.series for w in report.written] == ["8.1"]
    names = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.iterdir()))
    assert names == ["8.1.json", "8.1.npy", "index.csv"]
    # A run that finds everything complete does not leave one either.
    again = await run(tmp_path, ids("8.1", 3), scheme, registered=True)
    assert again.skipped == 3 and not (tmp_path / ".staging").exists()


def test_remove_empty_staging_keeps_staged_frames(tmp_path: Path) -> None:
    writer = SeriesWriter(tmp_path)
    image = Image.from_array("x:1", np.zeros((2, 2), np.uint8))
    writer.stage(image, {"generalSeriesModule": GeneralSeriesModule(series_instance_uid="9.1")})
    (writer.staging / "9.2").mkdir()  # left empty (say, a stage that failed)
    assert writer.remove_empty_staging() is False
    assert [p.name for p in writer.staging.iterdir()] == ["9.1"]
    assert [f.image_id for f in writer.staged()] == ["x:1"]
    writer.finalize("9.1")
    assert writer.remove_empty_staging() is True and not writer.staging.exists()
    assert list(writer.staged()) == [] and writer.remove_empty_staging() is True


async def test_a_complete_series_is_never_overwritten_with_other_frames(tmp_path: Path) -> None:
    scheme = Synthetic()
    await run(tmp_path, ids("4.1", 3), scheme, registered=True)
    before = (tmp_path / "4.1.npy").read_bytes()
    report = await run(tmp_path, ids("4.1", 5), scheme, registered=True)
    assert list(report.failures) == ["series:4.1"]
    assert isinstance(report.errors["series:4.1"], OutputConflictError)
    assert (tmp_path / "4.1.npy").read_bytes() == before


def test_frames_of_different_sizes_are_written_one_file_each(tmp_path: Path) -> None:
    writer = SeriesWriter(tmp_path)
    for index, size in enumerate((4, 6, 4)):
        image = Image.from_array(f"x:{index}", np.full((size, size), index, np.uint8))
        writer.stage(image, {"generalSeriesModule": GeneralSeriesModule(series_instance_uid="5")})
    written = writer.finalize("5")
    assert written.layout == "frames" and written.frames == 3
    document = json.loads(written.manifest.read_text())
    arrays = [np.load(tmp_path / name) for name in document["files"]]
    assert [a.shape for a in arrays] == [(4, 4), (6, 6), (4, 4)]
    assert [int(a[0, 0]) for a in arrays] == [0, 1, 2]  # no positions: the order given


def test_tracker_waits_for_unknown_series_and_holds_failures() -> None:
    tracker = SeriesTracker({"a1": "A", "a2": "A", "b1": "B", "u": None})
    assert tracker.settled("a1", "A", True) == []
    assert tracker.settled("a2", "A", True) == []  # "u" might still belong to A
    assert tracker.settled("b1", "B", False) == []
    assert tracker.settled("u", "A", True) == ["A"]
    assert tracker.held == {"B"} and tracker.unwritten() == []


def test_frames_decoded_with_and_without_the_modality_lut_are_not_stacked(tmp_path: Path) -> None:
    # A series staged partly with prescale and partly without (a rerun with other
    # loader options) mixes stored and scaled values: refused, by name, not written.
    pixel = ImagePixelModule(
        samples_per_pixel=1,
        photometric_interpretation="MONOCHROME2",
        rows=2,
        columns=2,
        bits_allocated=16,
        bits_stored=12,
        high_bit=11,
        pixel_representation=0,
    )
    modules = {
        "imagePixelModule": pixel,
        "modalityLutModule": ModalityLutModule(rescale_slope=1.0, rescale_intercept=-1024.0),
        "generalSeriesModule": GeneralSeriesModule(series_instance_uid="6"),
    }
    writer = SeriesWriter(tmp_path)
    scaled = PreScale(enabled=True, scaled=True, slope=1.0, intercept=-1024.0)
    stored = PreScale(enabled=False, scaled=False, slope=1.0, intercept=-1024.0)
    for index, (value, record) in enumerate([(np.int16(-24), scaled), (np.uint16(1000), stored)]):
        image = Image.from_array(f"x:{index}", np.full((2, 2), value), prescale=record)
        writer.stage(image, modules)
    with pytest.raises(MetadataError, match="with and without the modality LUT"):
        writer.finalize("6")
    assert not list(tmp_path.glob("6.*")) and len(list(writer.staged("6"))) == 2
