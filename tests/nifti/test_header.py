"""NIfTI header reading: finding it in the first bytes, parsing it, refusing what is not one."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imageloader.errors import DecodeError, ImageTooLargeError, InvalidImageIdError
from imageloader.limits import Limits
from imageloader.nifti import nifti_image_id, parse_nifti_id
from imageloader.nifti.header import (
    HEADER_BYTES,
    MAX_HEADER_WIRE_BYTES,
    HeaderReader,
    check_limits,
    parse_header,
)
from tests.nifti._volumes import SAMPLES, nifti_bytes, sample

ID = "nifti:/data/x.nii"
RNG = np.random.default_rng(3)


def head_of(body: bytes, step: int) -> tuple[bytes, HeaderReader]:
    reader = HeaderReader(ID)
    for start in range(0, len(body), step):
        if reader.feed(body[start : start + step]):
            break
    return reader.finish(), reader


@given(step=st.integers(1, 5000))
@settings(max_examples=40, deadline=None)
def test_gzip_header_is_found_in_any_chunking_and_reading_stops(step: int) -> None:
    data = RNG.integers(0, 30000, size=(64, 64, 32), dtype=np.int16)
    body = nifti_bytes(data, gz=True)
    raw = gzip.decompress(body)
    head, reader = head_of(body, step)
    assert head == raw[:HEADER_BYTES]
    assert reader.compressed is True
    # Stopped within one chunk of the bytes the header needed, not at the end.
    assert reader.wire_bytes < len(body) // 4 + step


def test_plain_header_reads_only_the_first_bytes() -> None:
    body = nifti_bytes(np.zeros((40, 40, 40), np.int16))
    head, reader = head_of(body, 100)
    assert head == body[:HEADER_BYTES] and reader.wire_bytes == 600
    assert reader.compressed is False


def test_short_file_gives_all_it_has() -> None:
    body = (sample("standard.nii.gz")).read_bytes()  # inflates to 492 bytes: < 540
    head, reader = head_of(body, 7)
    assert len(head) == 492 and not reader.done
    assert parse_header(head, ID).shape == (4, 5, 7)


def test_a_gzip_stream_without_a_header_stops_at_the_cap() -> None:
    reader = HeaderReader(ID)
    # A gzip member header, then valid deflate that never yields a byte: empty
    # stored blocks (BFINAL 0, BTYPE 00, LEN 0, NLEN 0xFFFF), over and over.
    reader.feed(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03")
    empty_blocks = b"\x00\x00\x00\xff\xff" * 800

    def feed_forever() -> None:
        for _ in range(MAX_HEADER_WIRE_BYTES // len(empty_blocks) + 2):
            reader.feed(empty_blocks)

    with pytest.raises(DecodeError) as info:
        feed_forever()
    assert info.value.image_id == ID
    assert "no NIfTI header in the first" in str(info.value)


def test_corrupt_gzip_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="corrupt gzip") as info:
        HeaderReader(ID).feed(b"\x1f\x8b\x08\x00" + b"\xff" * 600)
    assert info.value.image_id == ID


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_nibabel_samples_parse(name: str) -> None:
    body = sample(name).read_bytes()
    head, _ = head_of(body, 1 << 16)
    info = parse_header(head, ID)
    assert info.shape == SAMPLES[name]
    assert info.version == (2 if "nifti2" in name else 1)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>not here</html>" * 30, "not a NIfTI"),
        (b"tiny", "too short"),
        (gzip.compress(b"hello" * 200), "not a NIfTI"),
    ],
)
def test_what_is_not_a_nifti_header_is_refused(body: bytes, message: str) -> None:
    head, _ = head_of(body, 1 << 16)
    with pytest.raises(DecodeError, match=message) as info:
        parse_header(head, ID)
    assert info.value.image_id == ID


def test_a_header_and_image_pair_is_refused_by_name() -> None:
    body = bytearray(nifti_bytes(np.zeros((2, 2, 2), np.uint8)))
    body[344:348] = b"ni1\x00"
    with pytest.raises(DecodeError, match=r"\.hdr/\.img pair"):
        parse_header(bytes(body[:HEADER_BYTES]), ID)


def test_complex_data_is_not_supported() -> None:
    body = nifti_bytes(np.zeros((2, 2, 2), np.complex64))
    with pytest.raises(DecodeError, match="not supported"):
        parse_header(body[:HEADER_BYTES], ID)


@pytest.mark.parametrize(
    ("slope", "inter", "expected"),
    [
        (2.0, 10.0, (2.0, 10.0)),
        (0.0, 5.0, (None, None)),  # slope 0: no scaling (Cornerstone, NIfTI)
        (math.nan, 5.0, (None, None)),
        (3.0, math.nan, (3.0, 0.0)),  # a NaN intercept is 0
    ],
)
def test_scaling_follows_cornerstone(slope: float, inter: float, expected: tuple) -> None:
    body = bytearray(nifti_bytes(np.zeros((2, 2, 2), np.int16)))
    body[112:120] = np.array([slope, inter], "<f4").tobytes()
    info = parse_header(bytes(body[:HEADER_BYTES]), ID)
    assert (info.slope, info.intercept) == expected


def test_limits_are_checked_on_the_header() -> None:
    info = parse_header(nifti_bytes(np.zeros((30, 20, 10), np.int16))[:HEADER_BYTES], ID)
    check_limits(info, Limits(), ID)
    with pytest.raises(ImageTooLargeError, match="volume limit") as info_error:
        check_limits(info, Limits(max_volume_bytes=30 * 20 * 10 * 2 - 1), ID)
    assert info_error.value.image_id == ID
    with pytest.raises(ImageTooLargeError, match="30x20 pixels"):
        check_limits(info, Limits(max_frame_pixels=599), ID)


def test_image_ids_round_trip_with_queries_in_the_url() -> None:
    source = "https://host/brain.nii.gz?token=a?b&frame=9"
    assert parse_nifti_id(nifti_image_id(source, 12)) == (source, 12)
    assert parse_nifti_id("nifti:/abs/path.nii.gz?frame=0") == ("/abs/path.nii.gz", 0)


@pytest.mark.parametrize(
    "image_id",
    [
        "nifti:/a.nii",  # no frame
        "nifti:?frame=1",  # no source
        "nifti:/a.nii?frame=-1",
        "nifti:/a.nii?frame=x",
        "nifti:/a.nii?frame=1234567890",
        "nifti:ftp://host/a.nii?frame=1",
        "nifti:https:///a.nii?frame=1",
    ],
)
def test_malformed_ids_are_refused(image_id: str) -> None:
    with pytest.raises(InvalidImageIdError) as info:
        parse_nifti_id(image_id)
    assert info.value.image_id == image_id
