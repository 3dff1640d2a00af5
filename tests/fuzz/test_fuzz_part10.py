"""Part 10 objects: parse, cut every frame, read pixel params and modules, decode.

The probe does what ``dicomfile:``/``wadouri:`` do with a fetched object, in the
sandbox: ``parse_part10`` with limits, ``frame(n)`` for frames 0, 1..16, the last
two and one past the end, ``metadata_modules`` and ``pixel_params`` of the first and
last frame, and ``decode_frame`` of both. Inputs are real objects damaged by byte
ops and by element-aware edits (lengths, pixel-module values, deleted, repeated or
reordered elements, encapsulated items and offset tables, segmented palettes).

Properties: nothing but our typed errors (naming the imageId), no crash, hang or
out-of-memory; a frame outside ``1..NumberOfFrames`` is an InvalidImageIdError; a
native frame has exactly the bytes the pixel module calls for; a decoded frame
keeps the pixel contract.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from imageloader.decode.params import DecodeOptions
from imageloader.limits import Limits

from ._checks import assert_decoded, run_case
from ._fuzz import fuzz_settings
from ._mutations import apply_byte_ops, apply_dicom_ops, byte_ops, dicom_ops, layout_of
from ._sandbox import Sandbox
from ._seeds import part10_seeds

#: Small enough that a hostile header cannot make the sandbox allocate much.
LIMITS = Limits(max_frame_pixels=1 << 22, max_response_bytes=64 << 20)
SEEDS = part10_seeds()
BY_NAME = {seed.name: seed.data for seed in SEEDS}


@st.composite
def damaged_objects(draw: st.DrawFn) -> tuple[str, list[Any], list[Any]]:
    """A seed's name, element-aware edits (mostly) and byte ops (sometimes).

    The ops, not the bytes, are the example: a failure prints as a short list.
    """
    seed = draw(st.sampled_from(SEEDS))
    layout = layout_of(seed.data)
    edits: list[Any] = []
    if layout is not None and draw(st.integers(0, 3)):
        edits = draw(dicom_ops(layout))
    damage: list[Any] = []
    if layout is None or not edits or draw(st.booleans()):
        damage = draw(st.lists(byte_ops, min_size=1, max_size=4))
    return seed.name, edits, damage


def build(name: str, edits: list[Any], damage: list[Any]) -> bytes:
    """The damaged object an example describes."""
    data = BY_NAME[name]
    if edits:
        layout = layout_of(data)
        assert layout is not None
        data = apply_dicom_ops(layout, edits)
    return apply_byte_ops(data, damage, head=4096)


def _check(value: dict[str, Any]) -> None:
    if "frames" not in value:
        return  # the parse failed with a typed error: nothing else to check
    for step, result in value["outside"]:
        assert result == "NotFoundError", (step, result)
    if not value["encapsulated"]:
        expected = (value["frame_bits"] + 7) // 8
        for n, length in value["lengths"].items():
            assert length == expected, f"native frame {n} has {length} bytes, not {expected}"
    for _, params, summary in value["decoded"]:
        assert_decoded(summary, params, DecodeOptions())


def _short(case: object) -> str:
    text = repr(case)
    return text[:600] + ("..." if len(text) > 600 else "")


def test_every_seed_parses_and_decodes(sandbox: Sandbox) -> None:
    # The properties below are only as good as the probe: on the undamaged seeds
    # every step must succeed (except for the object that has no pixel data).
    for seed in SEEDS:
        outcome = run_case(sandbox, "part10 seeds", "part10", seed.data, LIMITS, True)
        value = outcome.value
        if seed.name.endswith("no-pixel-data.dcm"):
            assert value["steps"] == [("parse", "MetadataError")]
            continue
        _check(value)
        assert all(result == "ok" for _, result in value["steps"]), (seed.name, value["steps"])
        assert value["decoded"], seed.name


#: A segmented LUT whose 10,000 indirect segments each replay 10,000 empty ones
#: (about half a minute per expansion before the expansion was bounded).
REPLAYS = (((0, 1, 7), 1), ((2, 0xFFFF, 40003, 0), 10_000), ((0, 0), 10_000))


@fuzz_settings(800, sandboxed=True)
@given(damaged_objects())
# Hostile structures the random search reaches only now and then, always run:
# 60,000 one-fragment frames behind a valid Basic Offset Table,
@example(("emri_small_jpeg_2k_lossless.dcm", [("explode", 60_000, True)], []))
# a segmented palette that expands nothing for millions of steps,
@example(("made/segmented-palette", [("palette", REPLAYS)], []))
# and a deflated dataset that inflates 600 MB from 600 kB.
@example(("image_dfl.dcm", [("zeros", 600)], []))
def test_damaged_objects_give_typed_errors_or_consistent_frames(
    sandbox: Sandbox, case: tuple[str, list[Any], list[Any]]
) -> None:
    data = build(*case)
    outcome = run_case(sandbox, "part10", "part10", data, LIMITS, True, context=_short(case))
    if hasattr(outcome, "value"):
        _check(outcome.value)
