"""Test data for the DICOM object tests: pydicom's test files, the Cornerstone corpus.

pydicom's test files include deliberately odd objects (dates like ``1997.04.24``,
over-long UIDs) for which pydicom warns while reading. The tests run with warnings
as errors, so reads go through :func:`pydicom_warnings_allowed`, which accepts
warnings raised from inside pydicom, and only those.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset

from tests.corpus import CORNERSTONE

PYDICOM_DIR = os.path.dirname(pydicom.__file__)


@contextlib.contextmanager
def pydicom_warnings_allowed() -> Iterator[list[warnings.WarningMessage]]:
    """Record warnings; fail on any that does not come from pydicom's own code."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    foreign = [w for w in caught if not w.filename.startswith(PYDICOM_DIR)]
    assert not foreign, [f"{w.filename}:{w.lineno}: {w.message}" for w in foreign]


def data_file(name: str) -> str:
    """The path of one pydicom test file."""
    path = get_testdata_file(name)
    assert path is not None, name
    return str(path)


def read(path: str | Path) -> Dataset:
    """An independent pydicom read of a file (for reference values)."""
    with pydicom_warnings_allowed():
        return pydicom.dcmread(path, force=True)


def _pixel_files() -> list[str]:
    found = []
    for path in sorted(get_testdata_files()):
        if not os.path.isfile(path):
            continue
        with pydicom_warnings_allowed():
            try:
                ds = pydicom.dcmread(path, force=True, defer_size=1024)
            except Exception:
                continue
            if any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                found.append(path)
    return found


PYDICOM_PIXEL_FILES = _pixel_files()

#: pydicom test files with pixel data that are broken on purpose, and the error they give.
BROKEN = {
    "MR_truncated.dcm": "DecodeError",  # pixel data cut short
    "emri_small_jpeg_2k_lossless_too_short.dcm": "DecodeError",  # no sequence delimiter
    "badVR.dcm": "MetadataError",  # NumberOfFrames '1A'
    "meta_missing_tsyntax.dcm": "MetadataError",  # pixel data without a pixel module
    "nested_priv_SQ.dcm": "MetadataError",  # likewise
}


def cornerstone_files() -> list[Path]:
    """The corpus's Part 10 files (``tests/data/cornerstone``)."""
    files = sorted(
        p for p in CORNERSTONE.iterdir() if p.is_file() and p.name not in ("README.md", "LICENSE")
    )
    assert len(files) >= 30, files
    return files


def cornerstone_params() -> list[object]:
    """The corpus files as test parameters."""
    return list(cornerstone_files())


def to_bytes(ds: Dataset, **kwargs: object) -> bytes:
    """A dataset written as a Part 10 object."""
    buffer = io.BytesIO()
    with pydicom_warnings_allowed():
        ds.save_as(buffer, enforce_file_format=True, **kwargs)  # type: ignore[arg-type]
    return buffer.getvalue()
