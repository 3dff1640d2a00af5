"""Web images and NIfTI files: the other decode entry points, on damaged real files.

``decode_web_image`` (Pillow: PNG, JPEG with EXIF, GIF, TIFF, BMP) and NIfTI's
``read_volume`` + ``frame_pixels`` run in the sandbox on files with damaged header
fields (sizes, bit depths, data types, offsets, scaling) and damaged bytes.

Properties: only our typed errors naming the imageId, no crash, hang or
out-of-memory; a web image is ``(rows, columns)`` greyscale or ``(rows, columns,
3|4)`` uint8 colour; NIfTI frames are ``(rows, columns)``.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from imageloader.limits import Limits

from ._checks import run_case
from ._fuzz import fuzz_settings
from ._mutations import apply_byte_ops, byte_ops, interesting_ints, write_field
from ._sandbox import Sandbox
from ._seeds import nifti_seeds, web_seeds

WEB = {seed.name: seed.data for seed in web_seeds()}
NIFTI = {seed.name: seed.data for seed in nifti_seeds()}
MAX_PIXELS = 1 << 20
NIFTI_LIMITS = Limits(max_frame_pixels=1 << 20, max_volume_bytes=64 << 20)

#: (offset, width, big endian) of the header fields of each format.
WEB_FIELDS = {
    "png": [(16, 4, True), (20, 4, True), (24, 1, True), (25, 1, True), (8, 4, True)],
    "gif": [(6, 2, False), (8, 2, False), (10, 1, False)],
    "bmp": [
        (2, 4, False),
        (10, 4, False),
        (18, 4, False),
        (22, 4, False),
        (28, 2, False),
        (30, 4, False),
    ],
    "jpg": [(4, 2, True)],
    "tif": [(4, 4, False)],
}
# NIfTI-1: sizeof_hdr, dim[0..7], datatype, bitpix, pixdim[1..3], vox_offset, scl_slope,
# scl_inter, qform_code, sform_code, magic; NIfTI-2: sizeof_hdr, datatype, bitpix, dim[0..3].
NIFTI1_FIELDS = [
    (0, 4),
    *((40 + 2 * i, 2) for i in range(8)),
    (70, 2),
    (72, 2),
    (80, 4),
    (84, 4),
    (108, 4),
    (112, 4),
    (116, 4),
    (252, 2),
    (254, 2),
    (344, 4),
]
NIFTI2_FIELDS = [(0, 4), (12, 2), (14, 2), *((16 + 8 * i, 8) for i in range(4)), (168, 8)]

header_edits = st.lists(st.tuples(st.integers(0, 63), interesting_ints), max_size=3)


def _web_build(name: str, edits: list[tuple[int, int]], damage: list[Any]) -> bytes:
    data = bytearray(WEB[name])
    fields = WEB_FIELDS[name.rsplit(".", 1)[1]]
    for index, value in edits:
        offset, width, big = fields[index % len(fields)]
        write_field(data, offset, width, value, big=big)
    return apply_byte_ops(bytes(data), damage, head=256)


@fuzz_settings(400, sandboxed=True)
@given(st.sampled_from(sorted(WEB)), header_edits, st.lists(byte_ops, max_size=3), st.booleans())
def test_damaged_web_images(sandbox: Sandbox, name: str, edits, damage, rgba: bool) -> None:
    data = _web_build(name, edits, damage)
    context = repr((name, edits, damage, rgba))[:600]
    outcome = run_case(sandbox, "web images", "web", data, rgba, MAX_PIXELS, context=context)
    if not hasattr(outcome, "value"):
        return
    value = outcome.value
    shape = value["shape"]
    assert len(shape) in (2, 3) and shape[0] * shape[1] <= MAX_PIXELS, shape
    if value["color"]:
        assert len(shape) == 3 and shape[2] == (4 if rgba else 3) and value["dtype"] == "|u1", value
    else:
        assert len(shape) == 2 and value["dtype"] in ("|u1", "<u2", "<i4", "<f4"), value
    assert value["min_value"] <= value["max_value"], value


def _nifti_build(
    name: str, edits: list[tuple[int, int]], damage: list[Any], inflated: bool
) -> bytes:
    data = NIFTI[name]
    gz = data[:2] == b"\x1f\x8b"
    raw = bytearray(zlib.decompress(data, 16 + zlib.MAX_WBITS) if gz else data)
    version2 = raw[:4] == (540).to_bytes(4, "little")
    fields = NIFTI2_FIELDS if version2 else NIFTI1_FIELDS
    for index, value in edits:
        offset, width = fields[index % len(fields)]
        write_field(raw, offset, width, value, big=False)
    if inflated:  # damage the file itself, then (re)compress it
        raw = bytearray(apply_byte_ops(bytes(raw), damage, head=352))
        return gzip.compress(bytes(raw), mtime=0) if gz else bytes(raw)
    body = gzip.compress(bytes(raw), mtime=0) if gz else bytes(raw)
    return apply_byte_ops(body, damage, head=352)


@fuzz_settings(400, sandboxed=True)
@given(st.sampled_from(sorted(NIFTI)), header_edits, st.lists(byte_ops, max_size=3), st.booleans())
def test_damaged_nifti_files(sandbox: Sandbox, name: str, edits, damage, inflated: bool) -> None:
    data = _nifti_build(name, edits, damage, inflated)
    context = repr((name, edits, damage, inflated))[:600]
    outcome = run_case(sandbox, "nifti files", "nifti", data, NIFTI_LIMITS, context=context)
    if not hasattr(outcome, "value") or "frames" not in outcome.value:
        return
    value = outcome.value
    for shape in value["shapes"]:
        assert shape == (value["rows"], value["columns"]), (shape, value)
