"""imageId parsing of the DICOM schemes: what fuzzing found (tests/fuzz/test_fuzz_ids.py).

Each of these escaped as a bare ValueError or UnicodeEncodeError, or parsed into
something no loader could use, before the parsers checked for it.
"""

from __future__ import annotations

import pytest

from imageloader.dicom.dicomfile import parse_dicomfile_id
from imageloader.dicom.frames import MAX_FRAME_NUMBER, parse_frame_number
from imageloader.dicom.wadors import parse_wadors_id
from imageloader.dicom.wadouri import parse_wadouri_id
from imageloader.errors import InvalidImageIdError

FRAMES = "wadors:http://pacs/studies/0/series/0/instances/0/frames/"


@pytest.mark.parametrize(
    ("parse", "image_id"),
    [
        # int() refuses more than 4300 digits (ValueError)
        (parse_wadors_id, FRAMES + "9" * 4301),
        (parse_dicomfile_id, "dicomfile:?frame=" + "9" * 4301),
        (parse_wadouri_id, "wadouri:http://pacs/wado?frame=" + "9" * 4301),
        # str.isdigit() takes "²", which int() refuses (ValueError)
        (parse_dicomfile_id, "dicomfile:/a.dcm?frame=²"),
        (parse_wadouri_id, "wadouri:http://pacs/wado?frame=²"),
        # a lone surrogate (JSON's "\ud800") in a query: urlencode raised UnicodeEncodeError
        (parse_wadouri_id, "wadouri:http://h/?a=\ud800"),
        # a port that is not one: the URL was returned, and failed later
        (parse_wadouri_id, ":HTTP://:65536"),
        (parse_wadouri_id, "wadouri:http://h::/x"),
        # no file can be named so: a NUL, a lone surrogate that is no undecodable byte
        (parse_dicomfile_id, "dicomfile:\x00"),
        (parse_dicomfile_id, "dicomfile:/data/\ud800.dcm"),
        # a base no request can be sent to
        (parse_wadors_id, "wadors:http://pa\ud800cs/studies/0/series/0/instances/0/frames/1"),
    ],
)
def test_malformed_ids_are_invalid_image_id_errors(parse, image_id: str) -> None:
    with pytest.raises(InvalidImageIdError) as caught:
        parse(image_id)
    assert caught.value.image_id == image_id


def test_frame_numbers_are_ascii_digits_up_to_an_is_value() -> None:
    assert parse_frame_number("0007", "x") == 7
    assert parse_frame_number(str(MAX_FRAME_NUMBER), "x") == MAX_FRAME_NUMBER
    assert parse_frame_number("0" * 50 + "3", "x") == 3  # leading zeros are not digits that count
    for bad in ("0", "", str(MAX_FRAME_NUMBER + 1), "٣", "+1", " 1"):
        with pytest.raises(InvalidImageIdError):
            parse_frame_number(bad, "x")


def test_valid_ids_still_parse() -> None:
    assert parse_dicomfile_id("dicomfile:/data/ct.dcm?frame=3") == ("/data/ct.dcm", 3)
    # A file name with an undecodable byte, as os.fsdecode writes it, is a path.
    assert parse_dicomfile_id("dicomfile:/data/\udcff.dcm")[0] == "/data/\udcff.dcm"
    assert parse_wadouri_id("wadouri:http://pacs:8042/wado?objectUID=1&frame=2") == (
        "http://pacs:8042/wado?objectUID=1",
        2,
    )
    assert parse_wadors_id(FRAMES + "12").frame == 12
