"""Regression tests for NIfTI bugs the fuzzers found.

A NaN vox_offset raised a bare ValueError; a tiny .nii.gz whose header claimed
gigabytes of voxels made the loader allocate them before noticing the stream was
short. Both are now DecodeErrors, before any such allocation.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from imageloader.errors import DecodeError
from imageloader.limits import Limits
from imageloader.nifti.volume import read_volume
from tests.nifti._volumes import nifti_bytes

from ._fuzz import CASE_TIMEOUT
from ._probes import IMAGE_ID
from ._sandbox import Raised, Sandbox


def test_nifti_vox_offset_nan_is_a_decode_error() -> None:
    raw = bytearray(nifti_bytes(np.zeros((4, 4, 4), np.int16)))
    raw[108:112] = struct.pack("<f", float("nan"))  # vox_offset
    with pytest.raises(DecodeError):
        read_volume(bytes(raw), IMAGE_ID, Limits())


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
        # 2 GiB of voxels is over the default max_volume_bytes (1 GiB): refused from
        # the header; under a raised limit, the short body is a DecodeError instead.
        assert outcome.value["steps"][0][1] == "ImageTooLargeError"
