"""The benchmark's data: a synthetic CT series in six transfer syntaxes, made by real encoders.

- A 512×512 16-bit phantom volume (body outline, fat, muscle, lungs whose size and
  shape change along z, heart, liver, spine, ribs, table, quantum noise), stored
  unsigned with RescaleIntercept −1024 as CT scanners do.
- One series per transfer syntax, each with its own Study/Series/SOP UIDs (derived
  from the syntax name, so a fresh Orthanc stores each series): explicit VR little
  endian (pydicom), JPEG lossless SV1 ``dcmcjpeg +e1``, JPEG-LS ``dcmcjpls +el``,
  RLE ``dcmcrle``, JPEG 2000 ``gdcmconv --j2k`` and HTJ2K (OpenJPH via imagecodecs).
  Encoders run in parallel threads (the dcmtk/GDCM ones are separate processes).
- One multi-frame instance (Multi-frame Grayscale Word SC, explicit VR LE) of the
  first ``multiframe_frames`` slices.

Everything is written under ``benchmarks/.data/`` (git-ignored) and reused while
the recipe version and the slice count match: a rerun only uploads.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

__all__ = ["DATA_DIR", "SYNTAXES", "SeriesFiles", "Syntax", "make_data"]

DATA_DIR = Path(__file__).resolve().parent / ".data"
VERSION = 1  # bump when the phantom or a recipe changes: the cache is rebuilt
SIZE = 512
_WORD_SC_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.7.3"


@dataclass(frozen=True, slots=True)
class Syntax:
    """One series: a short name, its transfer syntax UID and the encoder that makes it."""

    name: str
    uid: str
    encoder: str  # a command (run on an explicit VR LE file) or "pydicom"/"imagecodecs"
    #: The pixels: the phantom (~5 ms a JPEG-LS decode) or the corpus CT, a real
    #: scan that decodes fast (~3.7 ms), where the pipeline's own costs show.
    source: str = "phantom"


SYNTAXES: tuple[Syntax, ...] = (
    Syntax("explicit", str(ExplicitVRLittleEndian), "pydicom"),
    Syntax("jpeg-lossless", str(JPEGLosslessSV1), "dcmcjpeg +e1 +un"),
    Syntax("jpeg-ls", str(JPEGLSLossless), "dcmcjpls +el +un"),
    Syntax("rle", str(RLELossless), "dcmcrle +un"),
    Syntax("j2k", str(JPEG2000Lossless), "gdcmconv --j2k"),
    Syntax("htj2k", str(HTJ2KLossless), "imagecodecs.htj2k_encode"),
    Syntax("ct-jpeg-ls", str(JPEGLSLossless), "dcmcjpls +el +un", source="corpus"),
)

#: The corpus CT whose pixels the ``corpus`` series carry (tests' copy, MIT).
CORPUS_CT = Path(__file__).resolve().parents[1] / "tests" / "data" / "cornerstone" / "CTImage.dcm"


def corpus_slice() -> np.ndarray:
    """The corpus CT's stored values as unsigned 16-bit (offset by 2048: its HU -1024)."""
    ds = pydicom.dcmread(CORPUS_CT)
    stored = ds.pixel_array.astype(np.int32)
    return np.clip(stored + 2048, 0, 65535).astype(np.uint16)


@dataclass(frozen=True, slots=True)
class SeriesFiles:
    """The files of one series on disk, in instance order."""

    name: str
    transfer_syntax_uid: str
    encoder: str
    paths: tuple[Path, ...]

    @property
    def study_uid(self) -> str:
        return _uid(self.name, "study")

    @property
    def series_uid(self) -> str:
        return _uid(self.name, "series")

    @property
    def sop_uids(self) -> list[str]:
        return [_uid(self.name, "sop", i) for i in range(len(self.paths))]

    @property
    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.paths)


# -- the phantom -----------------------------------------------------------------------------


def _ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float
) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def phantom_slice(index: int, count: int) -> np.ndarray:
    """Stored values (uint16, HU + 1024) of slice ``index`` of ``count``."""
    t = index / max(1, count - 1)  # 0 at the neck, 1 at the pelvis
    rng = np.random.default_rng(1000 + index)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    hu = np.full((SIZE, SIZE), -1000.0, np.float32)  # air
    body_rx, body_ry = 170 + 50 * np.sin(np.pi * t), 120 + 25 * np.sin(np.pi * t)
    hu[_ellipse(yy, xx, 256, 256, body_ry, body_rx)] = -100.0  # subcutaneous fat
    hu[_ellipse(yy, xx, 256, 256, body_ry - 12, body_rx - 12)] = 40.0  # muscle
    # Lungs: grow then shrink along z, with a vessel tree of bright dots.
    lung = max(0.0, np.sin(np.pi * min(1.0, t * 1.6)))
    if lung > 0.05:
        for side in (-1, 1):
            mask = _ellipse(yy, xx, 245, 256 + side * 75, 85 * lung, 55 * lung)
            hu[mask] = -850.0
            vessels = rng.random(mask.sum()) < 0.004
            values = hu[mask]
            values[vessels] = 30.0
            hu[mask] = values
    if 0.2 < t < 0.55:  # heart
        hu[_ellipse(yy, xx, 230, 280, 55 * np.sin(np.pi * (t - 0.2) / 0.35), 60)] = 45.0
    if t > 0.45:  # liver, then bowel
        hu[_ellipse(yy, xx, 250, 205, 70, 80)] = 60.0 if t < 0.75 else -50.0
    hu[_ellipse(yy, xx, 340, 256, 22, 20)] = 700.0  # vertebral body
    hu[_ellipse(yy, xx, 340, 256, 9, 8)] = 30.0  # spinal canal
    for k in range(-4, 5):  # ribs
        angle = np.pi / 2 + k * 0.32
        cy, cx = 256 + (body_ry - 18) * np.sin(angle), 256 + (body_rx - 18) * np.cos(angle)
        hu[_ellipse(yy, xx, cy, cx, 6, 6)] = 450.0 + 30 * k
    hu[(yy > 400) & (yy < 412) & (np.abs(xx - 256) < 220)] = 200.0  # table
    # Smooth texture plus quantum noise, as a reconstruction kernel leaves them.
    texture = np.sin(xx / 9.0 + index / 7.0) * np.cos(yy / 11.0) * 6.0
    inside = hu > -900
    hu += np.where(inside, texture + rng.normal(0, 12, hu.shape), rng.normal(0, 3, hu.shape))
    return np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)


# -- DICOM files ------------------------------------------------------------------------------


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=["imageloader-bench", str(VERSION), *map(str, parts)]))


def _dataset(name: str, index: int, count: int, pixels: np.ndarray) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = _uid(name, "sop", index)
    ds.StudyInstanceUID = _uid(name, "study")
    ds.SeriesInstanceUID = _uid(name, "series")
    ds.FrameOfReferenceUID = _uid(name, "for")
    ds.PatientName, ds.PatientID = f"Bench^{name}", f"bench-{name}"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, index + 1
    ds.SeriesDescription = f"synthetic CT phantom ({name})"
    ds.ImagePositionPatient = [-250.0, -250.0, -1.25 * index]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.9765625, 0.9765625], 1.25
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def _save(ds: Dataset, target: Path) -> None:
    partial = target.with_suffix(".partial")
    ds.save_as(partial, implicit_vr=False, little_endian=True, enforce_file_format=True)
    partial.rename(target)  # only complete files get the final name


def _htj2k(source: Path, target: Path) -> None:
    import imagecodecs

    ds = pydicom.dcmread(source)
    frame = np.frombuffer(ds.PixelData, np.uint16).reshape(ds.Rows, ds.Columns)
    ds.PixelData = encapsulate([bytes(imagecodecs.htj2k_encode(frame))])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless
    ds.save_as(target, enforce_file_format=True)


def _encode(syntax: Syntax, source: Path, target: Path) -> None:
    partial = target.with_suffix(".partial")
    if syntax.encoder.startswith("imagecodecs"):
        _htj2k(source, partial)
    else:
        command = [*syntax.encoder.split(), str(source), str(partial)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-400:]}")
    partial.rename(target)


def _make_one(
    syntax: Syntax, index: int, count: int, base: Path, slices: Callable[[int], np.ndarray]
) -> Path:
    folder = base / syntax.name
    target = folder / f"{index + 1:04d}.dcm"
    if not target.exists():
        pixels = slices(index) if syntax.source == "phantom" else _corpus()
        ds = _dataset(syntax.name, index, count, pixels)
        if syntax.source == "corpus":
            ds.RescaleIntercept = -1024 - 2048  # the same HU as the corpus CT
        if syntax.encoder == "pydicom":
            _save(ds, target)
        else:  # stage an explicit VR LE file with this series' UIDs, then encode it
            staged = folder / f"{index + 1:04d}.source.dcm"
            _save(ds, staged)
            _encode(syntax, staged, target)
            staged.unlink()
    return target


@functools.lru_cache(maxsize=1)
def _corpus() -> np.ndarray:
    return corpus_slice()


def _make_multiframe(frames: int, root: Path, slices: Callable[[int], np.ndarray]) -> Path:
    target = root / f"multiframe-{frames}.dcm"
    if not target.exists():
        stack = np.stack([slices(i) for i in range(frames)])
        ds = _dataset("multiframe", 0, 1, stack)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = _WORD_SC_MULTIFRAME
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = 0x00181063  # Frame Time
        ds.FrameTime = 40
        _save(ds, target)
    return target


def make_data(
    count: int, multiframe_frames: int, *, root: Path = DATA_DIR, log: Callable[[str], None] = print
) -> tuple[list[SeriesFiles], Path, dict[str, float]]:
    """Make (or reuse) every series of ``count`` slices and the multi-frame instance.

    Returns the series, the multi-frame file, and timing facts for the report.
    """
    import time

    missing = [
        tool for tool in ("dcmcjpeg", "dcmcjpls", "dcmcrle", "gdcmconv") if not shutil.which(tool)
    ]
    if missing:
        raise RuntimeError(f"encoders not found: {missing} (Debian: dcmtk, libgdcm-tools)")
    base = root / f"v{VERSION}-{count}"
    manifest = base / "manifest.json"
    started = time.perf_counter()
    cached = manifest.exists()
    cache: dict[int, np.ndarray] = {}

    def slices(index: int) -> np.ndarray:
        if index not in cache:
            cache[index] = phantom_slice(index, count)
        return cache[index]

    if not cached:
        log(f"making the phantom ({count} slices) and encoding {len(SYNTAXES)} series ...")
        for index in range(count):  # once, before the threads (numpy releases the GIL anyway)
            slices(index)
    for syntax in SYNTAXES:
        (base / syntax.name).mkdir(parents=True, exist_ok=True)
    jobs = [(s, i) for s in SYNTAXES for i in range(count)]
    # The dcmtk and GDCM encoders are processes: threads keep every core busy with them.
    with warnings.catch_warnings(), ThreadPoolExecutor(2 * (os.cpu_count() or 1)) as pool:
        warnings.simplefilter("ignore")
        paths = list(pool.map(lambda job: _make_one(*job, count, base, slices), jobs))
        multiframe = _make_multiframe(multiframe_frames, base, slices)
    series = [
        SeriesFiles(s.name, s.uid, s.encoder, tuple(paths[k * count : (k + 1) * count]))
        for k, s in enumerate(SYNTAXES)
    ]
    seconds = time.perf_counter() - started
    if not cached:
        manifest.write_text(json.dumps({"count": count, "seconds": seconds}))
    return series, multiframe, {"data_seconds": seconds, "data_cached": float(cached)}
