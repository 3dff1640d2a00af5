"""Bugs the fuzzers found in modules owned by others, pinned until they are fixed.

Each test states the property the module should have and is a strict xfail: it
fails today for the reason given, and once the owner fixes the module it passes,
strict turns that into a failure, and the marker (and the matching entry of
``tests.fuzz._checks.KNOWN_ISSUES``) should go.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from imageloader._nifti_volume import read_volume
from imageloader.errors import DecodeError
from imageloader.limits import Limits
from tests.nifti._volumes import nifti_bytes

from ._fuzz import CASE_TIMEOUT
from ._probes import IMAGE_ID
from ._sandbox import Raised, Sandbox


@pytest.mark.xfail(
    strict=True,
    raises=ValueError,
    reason="_nifti_header.parse_header reads vox_offset outside its try: int(NaN) escapes",
)
def test_nifti_vox_offset_nan_is_a_decode_error() -> None:
    raw = bytearray(nifti_bytes(np.zeros((4, 4, 4), np.int16)))
    raw[108:112] = struct.pack("<f", float("nan"))  # vox_offset
    with pytest.raises(DecodeError):
        read_volume(bytes(raw), IMAGE_ID, Limits())


@pytest.mark.xfail(
    strict=True,
    reason="_nifti_volume._inflate allocates the size the header claims (up to "
    "max_volume_bytes, 8 GiB by default) before inflating: 66 bytes of .nii.gz "
    "claiming 2 GiB of voxels zero-fill 2 GiB. Deflate inflates at most ~1032x, so "
    "a header claiming more than that of the compressed size is truncated anyway.",
)
def test_nifti_gz_header_cannot_size_an_allocation(sandbox: Sandbox) -> None:
    raw = bytearray(nifti_bytes(np.zeros((4, 4, 4), np.int16)))
    struct.pack_into("<8h", raw, 40, 3, 2048, 2048, 256, 1, 1, 1, 1)  # 2 GiB of int16
    body = gzip.compress(bytes(raw), mtime=0)
    assert len(body) < 100
    outcome = sandbox.run("nifti", body, Limits(), timeout=CASE_TIMEOUT)
    # The sandbox allows 512 MiB more than it holds: a typed error, not MemoryError.
    assert isinstance(outcome, Raised) or "steps" in getattr(outcome, "value", {})
    if isinstance(outcome, Raised):
        assert outcome.typed and not outcome.memory, outcome.traceback
    else:
        assert outcome.value["steps"][0][1] == "DecodeError"
