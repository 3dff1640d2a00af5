"""multipart/related parsing: RFC 2046 bodies, truncation, malformed bodies, loose bodies."""

from __future__ import annotations

import contextlib
import string
import time
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from imageloader.dicom.multipart import (
    Part,
    is_multipart,
    parse_loose_multipart,
    parse_media_type,
    parse_multipart_related,
    transfer_syntax_from_content_type,
)
from imageloader.errors import ResponseFormatError, TruncatedResponseError

BOUNDARY = "5e7843ff-8a0e-4586-b4a5-38785c34a3cc"
CT = f'multipart/related; type="application/octet-stream"; boundary={BOUNDARY}'
EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"


def build(
    parts: list[tuple[dict[str, str], bytes]],
    boundary: str = BOUNDARY,
    *,
    preamble: bytes = b"",
    epilogue: bytes = b"\r\n",
    padding: bytes = b"",
    line_end: bytes = b"\r\n",
) -> bytes:
    """A multipart body as RFC 2046 lays it out."""
    delimiter = b"--" + boundary.encode()
    out = [preamble, delimiter, padding, line_end]
    for i, (headers, data) in enumerate(parts):
        if i:
            out += [b"\r\n", delimiter, padding, line_end]
        out += [f"{name}: {value}\r\n".encode() for name, value in headers.items()]
        out += [b"\r\n", data]
    out += [b"\r\n", delimiter, b"--", epilogue]
    return b"".join(out)


def frame_headers(data: bytes, syntax: str = EXPLICIT_LE, number: int = 1) -> dict[str, str]:
    """The headers Orthanc 1.10 / DICOMweb plugin 1.7 writes on each frame part."""
    return {
        "Content-Location": f"http://127.0.0.1:8042/dicom-web/studies/1/series/2/instances/3/frames/{number}",
        "Content-Type": f"application/octet-stream; transfer-syntax={syntax}",
        "Content-Length": str(len(data)),
        "MIME-Version": "1.0",
    }


FRAMES = [bytes(range(256)) * 4, b"\x00\x01" * 300 + b"\r\n--5e7843ff", b""]
ORTHANC_BODY = build([(frame_headers(f, number=i + 1), f) for i, f in enumerate(FRAMES)])


# -- well-formed bodies -------------------------------------------------------------------


def test_parses_an_orthanc_style_frame_response() -> None:
    parts = parse_multipart_related(ORTHANC_BODY, CT)
    assert [bytes(p.data) for p in parts] == FRAMES
    first = parts[0]
    assert isinstance(first, Part)
    assert first.content_type == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
    assert first.transfer_syntax_uid == EXPLICIT_LE
    assert first.headers["content-length"] == "1024"  # case-insensitive
    assert first.headers["CONTENT-LOCATION"].endswith("/frames/1")
    assert ORTHANC_BODY[first.offset : first.offset + len(first.data)] == FRAMES[0]


def test_part_data_is_a_view_into_the_body_not_a_copy() -> None:
    body = bytearray(ORTHANC_BODY)
    parts = parse_multipart_related(body, CT)
    assert all(isinstance(p.data, memoryview) and p.data.obj is body for p in parts)
    body[parts[0].offset] ^= 0xFF  # a write to the body shows through the view
    assert parts[0].data[0] == FRAMES[0][0] ^ 0xFF


@pytest.mark.parametrize(
    "content_type",
    [
        f"multipart/related; boundary={BOUNDARY}",
        f'multipart/related; boundary="{BOUNDARY}"',
        f'Multipart/Related;BOUNDARY="{BOUNDARY}"; type="application/octet-stream"',
        f'multipart/related; type="application/octet-stream; transfer-syntax=*"; '
        f"boundary={BOUNDARY}",
        f"multipart/mixed; boundary={BOUNDARY} ; charset=utf-8",
    ],
)
def test_boundary_quoted_or_bare_in_any_parameter_position(content_type: str) -> None:
    assert [bytes(p.data) for p in parse_multipart_related(ORTHANC_BODY, content_type)] == FRAMES


def test_quoted_boundary_with_characters_a_token_cannot_hold() -> None:
    boundary = "simple boundary:=?'()+_,-./"
    body = build([({}, b"payload")], boundary)
    ct = f'multipart/related; boundary="{boundary}"'
    assert [bytes(p.data) for p in parse_multipart_related(body, ct)] == [b"payload"]


def test_preamble_transport_padding_and_epilogue_are_ignored() -> None:
    body = build(
        [({"Content-Type": "image/jpeg"}, b"\xff\xd8jpeg\xff\xd9")],
        preamble=b"This is the preamble.\r\n--not-our-boundary\r\n",
        padding=b" \t ",
        epilogue=b"\r\nThis is the epilogue; it may even hold --" + BOUNDARY.encode(),
    )
    (part,) = parse_multipart_related(body, CT)
    assert bytes(part.data) == b"\xff\xd8jpeg\xff\xd9"
    assert part.transfer_syntax_uid is None


def test_bare_lf_line_ends_after_delimiters_and_in_headers() -> None:
    body = (
        f"--{BOUNDARY}\nContent-Type: image/jpeg; transfer-syntax={JPEG_LOSSLESS}\n\n".encode()
        + b"abc"
        + f"\r\n--{BOUNDARY}--\n".encode()
    )
    (part,) = parse_multipart_related(body, CT)
    assert (bytes(part.data), part.transfer_syntax_uid) == (b"abc", JPEG_LOSSLESS)


def test_part_without_content_type_takes_the_multipart_type_parameter() -> None:
    body = build([({}, b"raw")])
    ct = (
        'multipart/related; type="application/octet-stream; transfer-syntax=1.2.840.10008.1.2"; '
        f"boundary={BOUNDARY}"
    )
    (part,) = parse_multipart_related(body, ct)
    assert part.content_type == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2"
    assert part.transfer_syntax_uid == "1.2.840.10008.1.2"
    assert len(part.headers) == 0


def test_payload_holding_a_longer_boundary_is_not_split() -> None:
    # "--boundary" followed by other bytes is no delimiter: only the real ones split.
    data = b"x\r\n--" + BOUNDARY.encode() + b"-and-more\r\ny"
    body = build([({"Content-Type": "application/octet-stream"}, data)])
    assert [bytes(p.data) for p in parse_multipart_related(body, CT)] == [data]


def test_empty_parts_and_a_part_without_headers() -> None:
    delimiter = f"--{BOUNDARY}".encode()
    body = delimiter + b"\r\n\r\n" + b"\r\n" + delimiter + b"\r\n" + b"\r\n" + delimiter + b"--"
    parts = parse_multipart_related(body, CT)
    assert [bytes(p.data) for p in parts] == [b"", b""]
    assert all(len(p.headers) == 0 for p in parts)


def test_folded_header_lines_are_joined() -> None:
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/octet-stream;\r\n"
        f" transfer-syntax=1.2.840.10008.1.2.5\r\n\r\nrle\r\n--{BOUNDARY}--"
    ).encode()
    (part,) = parse_multipart_related(body, CT)
    assert part.transfer_syntax_uid == "1.2.840.10008.1.2.5"


# -- truncated and malformed bodies -------------------------------------------------------


def test_every_cut_before_the_close_delimiter_is_truncation() -> None:
    # Orthanc answers 200 and stops mid-body when a transcode fails: whatever the
    # cut, the parser must say "truncated", never return fewer parts.
    body = build([(frame_headers(f), f) for f in (b"A" * 40, b"B" * 40)], epilogue=b"")
    for cut in range(len(body)):
        with pytest.raises(TruncatedResponseError):
            parse_multipart_related(body[:cut], CT, image_id="wadors:x", url="http://h/f")
    assert len(parse_multipart_related(body, CT)) == 2


def test_missing_close_delimiter_after_a_complete_part() -> None:
    body = build([({"Content-Type": "application/octet-stream"}, b"frame")])
    cut = body[: body.rindex(b"\r\n--")]
    with pytest.raises(TruncatedResponseError, match="no closing multipart boundary") as info:
        parse_multipart_related(cut, CT, image_id="wadors:http://h/f/1", url="http://h/f/1")
    assert info.value.image_id == "wadors:http://h/f/1"
    assert info.value.url == "http://h/f/1"


@pytest.mark.parametrize(
    "content_type",
    ["application/octet-stream", "application/dicom", "", "multipart", "text/html; boundary=x"],
)
def test_a_body_that_is_not_multipart_is_refused(content_type: str) -> None:
    assert not is_multipart(content_type)
    with pytest.raises(ResponseFormatError, match="expected a multipart body"):
        parse_multipart_related(ORTHANC_BODY, content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/related; type="application/octet-stream"',
        "multipart/related; boundary=",
        'multipart/related; boundary=""',
    ],
)
def test_no_boundary_parameter_is_malformed(content_type: str) -> None:
    assert is_multipart(content_type)
    with pytest.raises(ResponseFormatError, match="no boundary parameter"):
        parse_multipart_related(ORTHANC_BODY, content_type)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>502 Bad Gateway</html>", "no opening multipart boundary"),
        (b"--other-boundary\r\n\r\ndata\r\n--other-boundary--", "no opening multipart boundary"),
        (f"--{BOUNDARY}--\r\n".encode(), "has no parts"),
        (
            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n--{BOUNDARY}--".encode(),
            "no blank line",
        ),
        (
            f"--{BOUNDARY}\r\nContent-Type image/jpeg\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
            "malformed part header line",
        ),
        (
            f"--{BOUNDARY}\r\nContent-Length: 9\r\n\r\nabc\r\n--{BOUNDARY}--".encode(),
            "Content-Length is 9 but it holds 3 bytes",
        ),
        # "--boundaryjunk" is no delimiter, so the first one found is the close delimiter.
        (f"--{BOUNDARY}junk\r\n\r\nabc\r\n--{BOUNDARY}--".encode(), "has no parts"),
    ],
)
def test_malformed_bodies(body: bytes, message: str) -> None:
    with pytest.raises(ResponseFormatError, match=message) as info:
        parse_multipart_related(body, CT, image_id="wadors:x", url="http://h/x")
    assert (info.value.image_id, info.value.url) == ("wadors:x", "http://h/x")


def test_header_block_cut_by_the_end_of_the_body_is_truncation() -> None:
    body = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Len".encode()
    with pytest.raises(TruncatedResponseError, match="inside a part's headers"):
        parse_multipart_related(body, CT)


# -- Content-Type helpers ------------------------------------------------------------------


def test_parse_media_type() -> None:
    media_type, params = parse_media_type(
        'Multipart/Related; Type="application/octet-stream; transfer-syntax=*"; '
        'boundary="a\\"b"; start=<x@y>; flag'
    )
    assert media_type == "multipart/related"
    assert params == {
        "type": "application/octet-stream; transfer-syntax=*",
        "boundary": 'a"b',
        "start": "<x@y>",
        "flag": "",
    }


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        # Orthanc 1.10 puts the syntax inside the quoted type parameter.
        (
            'multipart/related; type="application/octet-stream; '
            'transfer-syntax=1.2.840.10008.1.2"; boundary=b',
            "1.2.840.10008.1.2",
        ),
        (f"multipart/related; type=image/jpeg; transfer-syntax={JPEG_LOSSLESS}", JPEG_LOSSLESS),
        (f"application/octet-stream; transfer-syntax={EXPLICIT_LE}", EXPLICIT_LE),
        ('multipart/related; type="application/octet-stream"; transfer-syntax= ', None),
        ('multipart/related; type="application/octet-stream"', None),
        ("", None),
        (None, None),
    ],
)
def test_transfer_syntax_from_content_type(content_type: str | None, expected: str | None) -> None:
    assert transfer_syntax_from_content_type(content_type) == expected


# -- Cornerstone's loose bodies ------------------------------------------------------------


@pytest.fixture(scope="module")
def ct_pixels(cornerstone_corpus: Path) -> bytes:
    """The 512x512 16-bit frame both loose bodies carry (CTImage.dcm's pixel data)."""
    return bytes(pydicom.dcmread(cornerstone_corpus / "CTImage.dcm").PixelData)


@pytest.mark.parametrize("explicit", [False, True])
def test_loose_even_aligned_body(
    cornerstone_corpus: Path, ct_pixels: bytes, explicit: bool
) -> None:
    # "Content-Type: foo\r\n--EVENBOUNDARY\r\n\r\n" + frame + "--EVENBOUNDARY\n":
    # no CRLF before the last delimiter and no "--" after it. Despite the name, the
    # frame starts at byte 37, an odd offset.
    body = (cornerstone_corpus / "wadors" / "CTImageEvenAligned.dat").read_bytes()
    parts = parse_loose_multipart(body, boundary="EVENBOUNDARY" if explicit else None)
    assert len(parts) == 1
    assert (parts[0].offset, bytes(parts[0].data)) == (37, ct_pixels)
    assert parts[0].content_type is None and parts[0].transfer_syntax_uid is None


@pytest.mark.parametrize("explicit", [False, True])
def test_loose_odd_aligned_body(cornerstone_corpus: Path, ct_pixels: bytes, explicit: bool) -> None:
    # "...--ODDBOUNDARY\r\n\r\n" + frame + "Content-Type: foo\r\n--ODDBOUNDARY\n\r\n": the
    # frame starts at byte 36 (even), and the stray "Content-Type: foo" before the
    # last delimiter is part of the body, as it is for Cornerstone's parser. The
    # caller takes the frame's rows x columns x 2 bytes.
    body = (cornerstone_corpus / "wadors" / "CTImageOddAligned.dat").read_bytes()
    parts = parse_loose_multipart(body, boundary="ODDBOUNDARY" if explicit else None)
    assert len(parts) == 1
    assert parts[0].offset == 36
    assert bytes(parts[0].data) == ct_pixels + b"Content-Type: foo"


@pytest.mark.parametrize("name", ["CTImageEvenAligned.dat", "CTImageOddAligned.dat"])
def test_loose_bodies_are_not_rfc_2046(cornerstone_corpus: Path, name: str) -> None:
    body = (cornerstone_corpus / "wadors" / name).read_bytes()
    boundary = "EVENBOUNDARY" if "Even" in name else "ODDBOUNDARY"
    with pytest.raises(TruncatedResponseError):
        parse_multipart_related(body, f"multipart/related; boundary={boundary}")


def test_loose_parser_errors() -> None:
    with pytest.raises(ResponseFormatError, match="no blank line"):
        parse_loose_multipart(b"--b\r\nabc")
    with pytest.raises(ResponseFormatError, match="no boundary line"):
        parse_loose_multipart(b"Content-Type: foo\r\n\r\nabc")
    with pytest.raises(ResponseFormatError, match="does not occur"):
        parse_loose_multipart(b"abc", boundary="b")
    with pytest.raises(TruncatedResponseError, match="no boundary after the last part"):
        parse_loose_multipart(b"--b\r\n\r\nframe without an end")
    parts = parse_loose_multipart(b"--b\r\n\r\none\r\n--b\r\nX-A: 1\r\n\r\ntwo--b--")
    assert [bytes(p.data) for p in parts] == [b"one", b"two"]
    assert parts[1].headers["x-a"] == "1"


# -- properties ----------------------------------------------------------------------------

BCHARS = string.ascii_letters + string.digits + "'()+_,-./:=?"
boundaries = st.text(BCHARS, min_size=1, max_size=70).filter(lambda b: not b.endswith("-"))
uids = st.lists(st.integers(0, 99999).map(str), min_size=2, max_size=8).map(".".join)
part_specs = st.tuples(
    st.binary(max_size=300),
    st.sampled_from([None, "application/octet-stream", "image/jpeg", "image/jls"]),
    st.one_of(st.none(), uids),
    st.booleans(),  # whether the part declares its Content-Length
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str, list[tuple[bytes, str | None, str | None]]]:
    boundary = draw(boundaries)
    needle = b"\r\n--" + boundary.encode()
    specs = draw(st.lists(part_specs, min_size=1, max_size=5))
    default_type = draw(st.sampled_from([None, "application/octet-stream"]))
    parts, expected = [], []
    for data, media_type, uid, with_length in specs:
        # The boundary must not occur in what it encloses (RFC 2046 5.1.1).
        assume((data + needle).find(needle) == len(data))
        headers = {}
        content_type = None
        if media_type is not None:
            content_type = media_type + (f"; transfer-syntax={uid}" if uid else "")
            headers["Content-Type"] = content_type
        if with_length:
            headers["Content-Length"] = str(len(data))
        parts.append((headers, data))
        effective = content_type if media_type is not None else default_type
        expected.append((data, effective, uid if media_type is not None and uid else None))
    preamble = draw(st.sampled_from([b"", b"preamble\r\n", b"\r\n"]))
    body = build(
        parts,
        boundary,
        preamble=preamble,
        epilogue=draw(st.binary(max_size=40)),
        padding=draw(st.sampled_from([b"", b" ", b"\t \t"])),
        line_end=draw(st.sampled_from([b"\r\n", b"\n"])),
    )
    ct = f'multipart/related; boundary="{boundary}"'
    if default_type:
        ct += f'; type="{default_type}"'
    return body, ct, expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(bodies())
def test_random_bodies_round_trip(
    case: tuple[bytes, str, list[tuple[bytes, str | None, str | None]]],
) -> None:
    body, content_type, expected = case
    parts = parse_multipart_related(body, content_type)
    assert [(bytes(p.data), p.content_type, p.transfer_syntax_uid) for p in parts] == expected
    for part in parts:
        assert part.data.obj is body
        assert body[part.offset : part.offset + len(part.data)] == part.data


mutations = st.lists(
    st.one_of(
        st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 50)),
        st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=20)),
        st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
        st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    ),
    min_size=1,
    max_size=4,
)


def mutate(body: bytes, ops: list[tuple[str, int, object]]) -> bytes:
    out = bytearray(body)
    for op, position, arg in ops:
        at = position % (len(out) + 1)
        if op == "delete":
            assert isinstance(arg, int)
            del out[at : at + arg]
        elif op == "insert":
            assert isinstance(arg, bytes)
            out[at:at] = arg
        elif op == "flip" and at < len(out):
            assert isinstance(arg, int)
            out[at] ^= arg
        elif op == "truncate":
            del out[at:]
    return bytes(out)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(bodies(), mutations, st.text(max_size=60))
def test_mutated_bodies_only_raise_typed_errors(
    case: tuple[bytes, str, list[tuple[bytes, str | None, str | None]]],
    ops: list[tuple[str, int, object]],
    junk_content_type: str,
) -> None:
    body, content_type, _ = case
    mutated = mutate(body, ops)
    for ct in (content_type, junk_content_type, f"multipart/related; boundary={junk_content_type}"):
        try:
            parts = parse_multipart_related(mutated, ct)
        except (ResponseFormatError, TruncatedResponseError):
            continue  # typed, and a FetchError: what a loader expects from a bad body
        for part in parts:
            assert part.data.obj is mutated
            assert 0 <= part.offset <= part.offset + len(part.data) <= len(mutated)
    with contextlib.suppress(ResponseFormatError, TruncatedResponseError):
        parse_loose_multipart(mutated)


# -- found by fuzzing (tests/fuzz/test_fuzz_multipart.py) -----------------------------------


def test_more_parts_than_allowed_are_refused_at_the_first_extra_one() -> None:
    body = build([({}, b"one"), ({}, b"two"), ({}, b"three")])
    assert len(parse_multipart_related(body, CT, max_parts=3)) == 3
    with pytest.raises(ResponseFormatError, match="more than 2 part"):
        parse_multipart_related(body, CT, max_parts=2)
    # A body cut short after the parts allowed is still truncated, not "too many".
    delimiter = f"--{BOUNDARY}".encode()
    cut = delimiter + b"\r\n\r\none\r\n" + delimiter + b"\r\n"
    with pytest.raises(TruncatedResponseError):
        parse_multipart_related(cut, CT, max_parts=1)


def test_split_frames_stops_at_one_part_more_than_it_asked_for() -> None:
    # A megabyte of empty parts (116,000 of them) answering a request for one frame:
    # splitting them all held the event loop for about a second.
    from imageloader.dicom.wadors import split_frames

    body = b"--b\r\n" + b"\r\n--b\r\n\r\n" * 116_000 + b"\r\n--b--"
    start = time.thread_time()  # CPU time: waiting for a shared core is not the split's
    with pytest.raises(ResponseFormatError, match="more than 1 part"):
        split_frames(body, "multipart/related; boundary=b", 1, "wadors:x", "https://pacs/frames/1")
    assert time.thread_time() - start < 0.05
