"""``decode_frame`` for every codec family, every codec, on damaged real frames.

Each case takes a real frame of one family (native, RLE, JPEG, JPEG lossless,
JPEG-LS, JPEG 2000, HTJ2K), damages its headers (dimensions, precision, component
counts, segment lengths, the RLE segment table) and its bytes (flips, truncation,
garbage), and decodes it in the sandbox with pixel parameters that may disagree
with the data (Rows/Columns, BitsAllocated/BitsStored, SamplesPerPixel, sign,
photometric interpretation, planar configuration, modality LUT, palette, transfer
syntax). The codec is either the default order or one codec alone, so the
fallbacks (Pillow, pylibjpeg, pyjpegls, pydicom's RLE) see hostile input too.

Properties: only our typed errors naming the imageId (no crash, hang, MemoryError
or foreign exception); a decoded frame keeps the pixel contract
(:func:`tests.fuzz._checks.assert_decoded`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imageloader.decode.codecs import default_registry
from imageloader.decode.params import DecodeOptions, Palette, PixelParams
from imageloader.decode.syntaxes import SYNTAXES, Family

from ._checks import assert_decoded, run_case
from ._fuzz import fuzz_settings
from ._mutations import apply_byte_ops, apply_field_ops, byte_ops, field_ops, header_fields
from ._sandbox import Sandbox
from ._seeds import Stream, streams_of

FAMILIES = [family.value for family in Family]


def _palette(entries: int, first: int, bits: int) -> Palette:
    dtype = np.uint8 if bits == 8 else np.uint16
    ramp = np.linspace(0, 255 if bits == 8 else 65535, entries).astype(dtype)
    return Palette(
        (entries, first, bits),
        (entries, first, bits),
        (entries, first, bits),
        ramp,
        ramp[::-1].copy(),
        ramp,
    )


PALETTES = [
    None,
    _palette(256, 0, 8),
    _palette(4096, 0, 16),
    _palette(16, 200, 16),
    _palette(0, 0, 8),
]
PHOTOMETRIC = [
    "MONOCHROME1",
    "MONOCHROME2",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_RCT",
    "YBR_ICT",
    "PALETTE COLOR",
    "YBR_PARTIAL_420",
    "",
    "HSV",
]
sizes = st.one_of(
    st.tuples(st.just("delta"), st.sampled_from([-1, 1, 2, -2])),
    st.tuples(st.just("times"), st.sampled_from([0.5, 2.0])),
    st.tuples(st.just("set"), st.sampled_from([0, -1, 1, 2, 3, 65535, 65536, 2**31])),
)
param_changes = st.one_of(
    st.tuples(st.just("rows"), sizes),
    st.tuples(st.just("columns"), sizes),
    st.tuples(st.just("samples_per_pixel"), st.sampled_from([0, 1, 2, 3, 4])),
    st.tuples(st.just("bits_allocated"), st.sampled_from([0, 1, 8, 12, 16, 24, 32, 64])),
    st.tuples(
        st.just("bits_stored"), st.sampled_from([0, 1, 7, 8, 11, 12, 15, 16, 17, 31, 32, 33])
    ),
    st.tuples(st.just("pixel_representation"), st.sampled_from([0, 1, 2])),
    st.tuples(st.just("photometric_interpretation"), st.sampled_from(PHOTOMETRIC)),
    st.tuples(st.just("planar_configuration"), st.sampled_from([0, 1, 2])),
    st.tuples(
        st.just("rescale_slope"), st.sampled_from([None, 0.0, -1.0, 0.5, 1e-300, 1e300, 2.0])
    ),
    st.tuples(st.just("rescale_intercept"), st.sampled_from([None, -1024.0, 0.5, 1e300, -1e300])),
    st.tuples(st.just("modality"), st.sampled_from([None, "CT", "PT", "RTDOSE"])),
    st.tuples(st.just("suvbw"), st.sampled_from([None, 0.0, 1e-10, 3.5, 1e300])),
    st.tuples(st.just("dose_grid_scaling"), st.sampled_from([None, 1e-5, 2.0, 1e300])),
    st.tuples(st.just("palette"), st.integers(0, len(PALETTES) - 1)),
    st.tuples(st.just("transfer_syntax_uid"), st.sampled_from([*sorted(SYNTAXES), "1.2.3"])),
)


def change_params(params: PixelParams, changes: list[tuple[str, Any]]) -> PixelParams:
    """``params`` with each change applied (sizes relative to the current value, or set)."""
    values: dict[str, Any] = {}
    for name, change in changes:
        if name in ("rows", "columns"):
            how, amount = change
            current = values.get(name, getattr(params, name))
            values[name] = {"delta": current + amount, "times": int(current * amount)}.get(
                how, amount
            )
        elif name == "palette":
            values[name] = PALETTES[change]
        else:
            values[name] = change
    return dataclasses.replace(params, **values)


@st.composite
def decode_cases(draw: st.DrawFn, family: str) -> tuple[Any, ...]:
    """(stream name, codec or None, header edits, byte ops, param changes, options)."""
    stream = draw(st.sampled_from(streams_of(family)))
    codecs = [c.name for c in default_registry().codecs(Family(family))]
    codec = draw(st.sampled_from([None, None, *codecs]))
    fields = draw(st.lists(field_ops, max_size=3)) if family != "native" else []
    damage = draw(st.lists(byte_ops, max_size=3))
    changes = draw(st.lists(param_changes, max_size=3))
    if not (fields or damage or changes):
        changes = [draw(param_changes)]
    options = DecodeOptions(prescale=draw(st.booleans()), use_rgba=draw(st.booleans()))
    return stream.name, codec, fields, damage, changes, options


def build(stream: Stream, fields: list[Any], damage: list[Any]) -> bytes:
    """The damaged frame."""
    data = stream.data
    if fields:
        spots = header_fields(stream.family, data)
        data = apply_field_ops(data, spots, fields, big=stream.family != "rle")
    return apply_byte_ops(data, damage)


def _max_pixels(params: PixelParams) -> int:
    # Room for a header that claims a few times the real size, no more.
    return max(4 * params.rows * params.columns, 1 << 16)


def test_every_stream_decodes_with_every_codec(sandbox: Sandbox) -> None:
    # Undamaged, every seed decodes in the default order, and each codec of its family
    # alone either decodes it to the same contract or declines with our error: the
    # harness reaches every codec, so the damaged cases below test them all.
    options = DecodeOptions()
    for family in FAMILIES:
        codecs = [c.name for c in default_registry().codecs(Family(family))]
        for stream in streams_of(family):
            params = stream.params
            decoded_by = []
            for codec in [None, *codecs]:
                outcome = run_case(
                    sandbox,
                    "decode seeds",
                    "decode",
                    stream.data,
                    params,
                    options,
                    _max_pixels(params),
                    codec,
                    context=f"{stream.name} with {codec or 'the default order'}",
                )
                if codec is None:
                    assert hasattr(outcome, "value"), (stream.name, outcome)
                if hasattr(outcome, "value"):
                    assert_decoded(outcome.value, params, options)
                    decoded_by.append(outcome.value["codec"])
            assert len(decoded_by) >= 2 or family == "native", (stream.name, decoded_by)


@pytest.mark.parametrize("family", FAMILIES)
def test_damaged_frames_give_typed_errors_or_contract_pixels(sandbox: Sandbox, family: str) -> None:
    streams = {stream.name: stream for stream in streams_of(family)}
    assert streams, f"no {family} seed"

    @fuzz_settings(600, sandboxed=True)
    @given(decode_cases(family))
    def check(case: tuple[Any, ...]) -> None:
        name, codec, fields, damage, changes, options = case
        stream = streams[name]
        data = build(stream, fields, damage)
        params = change_params(stream.params, changes)
        outcome = run_case(
            sandbox,
            f"decode: {family}",
            "decode",
            data,
            params,
            options,
            _max_pixels(stream.params),
            codec,
            context=repr(case)[:600],
        )
        if hasattr(outcome, "value"):
            assert_decoded(outcome.value, params, options)

    check()
