"""Variants of DICOM files made by real encoders, each with fresh, deterministic UIDs.

Every variant gets its own Study, Series and SOP Instance UIDs, derived from its
name (so a run is reproducible, and Orthanc does not take it for an instance it
already holds). The encoders are the real ones a PACS meets:

- dcmtk: ``dcmconv`` (implicit, explicit, big endian), ``dcmcjpeg`` (JPEG lossless
  .57/.70, baseline .50), ``dcmcjpls`` (JPEG-LS .80/.81), ``dcmcrle`` (RLE .5);
- GDCM: ``gdcmconv --j2k`` (JPEG 2000 lossless .90);
- pydicom's own ``Dataset.compress`` (RLE, JPEG-LS, JPEG 2000 lossless);
- OpenJPH through ``imagecodecs.htj2k_encode``, wrapped with ``pydicom.encaps``
  (HTJ2K lossless .201, and .202 with the RPCL options that syntax requires).

:func:`make_variants` writes them into a directory and reuses what is already
there, so a session pays for each encoder run once.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

__all__ = [
    "EncoderError",
    "Variant",
    "fresh_uids",
    "make_multiframe",
    "make_variants",
    "missing_tools",
    "quiet",
    "write_with_fresh_uids",
]

_TOOLS = ("dcmconv", "dcmcjpeg", "dcmcjpls", "dcmcrle", "gdcmconv")
# Multi-frame Grayscale Word Secondary Capture: an IOD that may hold several frames.
_MULTIFRAME_WORD_SC = UID("1.2.840.10008.5.1.4.1.1.7.3")


class EncoderError(RuntimeError):
    """An encoder failed; the message holds its command and output."""


@dataclass(frozen=True, slots=True)
class Variant:
    """One encoded file."""

    name: str
    path: Path
    #: The file it was encoded from.
    origin: Path
    #: The command or call that encoded it.
    encoder: str
    transfer_syntax_uid: str
    lossless: bool


class _Encoder(Protocol):
    @property
    def description(self) -> str:
        """What made the file: a command line or a call."""

    def __call__(self, source: Path, target: Path) -> None: ...


@dataclass(frozen=True, slots=True)
class _Recipe:
    name: str  # starts with its source: "ct-", "rgb-" or "multiframe-"
    transfer_syntax_uid: str
    encode: _Encoder  # (explicit VR LE source with fresh UIDs, output path)
    lossless: bool = True

    @property
    def source(self) -> str:
        return self.name.split("-", 1)[0]


@contextmanager
def quiet() -> Iterator[None]:
    """Silence pydicom's warnings about odd test files (pytest makes warnings errors).

    Not thread-safe (warning filters are process-wide): around a thread pool, enter
    it once in the thread that starts the pool.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def missing_tools() -> list[str]:
    """The encoder programs not found on PATH."""
    return [tool for tool in _TOOLS if shutil.which(tool) is None]


def fresh_uids(ds: Dataset, key: str) -> None:
    """Give ``ds`` new Study, Series and SOP Instance UIDs, the same for the same ``key``."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, keyword, generate_uid(entropy_srcs=["imageloader-tests", key, keyword]))
    if getattr(ds, "file_meta", None) is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def write_with_fresh_uids(
    source: Path, target: Path, key: str, *, explicit_little_endian: bool = False
) -> Dataset:
    """Copy a DICOM file with :func:`fresh_uids`; optionally re-encode it as explicit VR LE.

    Everything else is written back as pydicom read it (same transfer syntax, same
    pixel data bytes). Returns the dataset written.
    """
    with quiet():
        ds = pydicom.dcmread(source)
        fresh_uids(ds, key)
        if explicit_little_endian:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.save_as(target, implicit_vr=False, little_endian=True, enforce_file_format=True)
        else:
            ds.save_as(target, enforce_file_format=False)
    return ds


def make_multiframe(source: Path, target: Path, frames: int = 3) -> Dataset:
    """A multi-frame (Word SC) instance built from a single-frame grayscale image.

    Frame k is the source image rolled down by k * rows / frames, so every frame
    differs and a wrong frame index shows.
    """
    with quiet():
        ds = pydicom.dcmread(source)
        image = ds.pixel_array
        step = image.shape[0] // frames
        stack = np.stack([np.roll(image, k * step, axis=0) for k in range(frames)])
        ds.PixelData = stack.tobytes()
        ds["PixelData"].VR = "OW"
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = 0x00181063  # Frame Time
        ds.FrameTime = 100
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = _MULTIFRAME_WORD_SC
        fresh_uids(ds, f"multiframe-{source.name}")
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(target, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return ds


def make_variants(
    out_dir: Path, *, ct: Path, rgb: Path, names: set[str] | None = None, workers: int = 4
) -> list[Variant]:
    """Encode the variants of ``ct`` (16-bit signed grayscale) and ``rgb`` (8-bit RGB).

    Files already in ``out_dir`` are reused. ``names`` restricts the recipes run.
    Raises :class:`EncoderError` if an encoder fails.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    multiframe = out_dir / "source-multiframe.dcm"
    if not multiframe.exists():
        make_multiframe(ct, multiframe)
    sources = {"ct": ct, "rgb": rgb, "multiframe": multiframe}
    recipes = [r for r in RECIPES if names is None or r.name in names]
    # Most encoders are separate programs: run several at once. The warning filters
    # are process-wide, not per thread, so they are set once around all the threads.
    with quiet(), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda r: _make(r, out_dir, sources[r.source]), recipes))


def _make(recipe: _Recipe, out_dir: Path, source: Path) -> Variant:
    target = out_dir / f"{recipe.name}.dcm"
    if not target.exists():
        # Fresh UIDs first: the encoders keep them (dcmtk is told +un, never new UIDs).
        staged = out_dir / f"{recipe.name}.source.dcm"
        write_with_fresh_uids(source, staged, recipe.name, explicit_little_endian=True)
        partial = target.with_suffix(".partial")
        recipe.encode(staged, partial)
        partial.rename(target)  # only a complete file ever has the final name
        staged.unlink()
    return Variant(
        name=recipe.name,
        path=target,
        origin=source,
        encoder=recipe.encode.description,
        transfer_syntax_uid=recipe.transfer_syntax_uid,
        lossless=recipe.lossless,
    )


# -- encoders ------------------------------------------------------------------------------


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise EncoderError(
            f"{' '.join(command)} exited with {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )


@dataclass(frozen=True, slots=True)
class _Tool:
    """An encoder program: ``program *args source target``."""

    args: tuple[str, ...]

    @property
    def description(self) -> str:
        return " ".join(self.args)

    def __call__(self, source: Path, target: Path) -> None:
        _run(*self.args, str(source), str(target))


def _tool(*args: str) -> _Tool:
    return _Tool(args)


@dataclass(frozen=True, slots=True)
class _PydicomCompress:
    """pydicom's own encoders, through ``Dataset.compress``."""

    uid: UID

    @property
    def description(self) -> str:
        return f"pydicom Dataset.compress({self.uid.keyword})"

    def __call__(self, source: Path, target: Path) -> None:
        with quiet():
            ds = pydicom.dcmread(source)
            ds.compress(self.uid)
            ds.save_as(target, enforce_file_format=True)


@dataclass(frozen=True, slots=True)
class _HTJ2K:
    """HTJ2K by OpenJPH (imagecodecs), one fragment per frame, basic offset table."""

    uid: UID

    @property
    def description(self) -> str:
        if self.uid == HTJ2KLosslessRPCL:
            return "imagecodecs.htj2k_encode(tlm=True, tilepart=RESOLUTIONS) + pydicom encapsulate"
        return "imagecodecs.htj2k_encode + pydicom encapsulate"

    def __call__(self, source: Path, target: Path) -> None:
        import imagecodecs  # imported here: only these recipes need it

        # OpenJPH writes RPCL order already; .202 also wants TLM and tile-parts.
        rpcl = self.uid == HTJ2KLosslessRPCL
        tilepart = imagecodecs.HTJ2K.TILEPART.RESOLUTIONS if rpcl else None
        with quiet():
            ds = pydicom.dcmread(source)
            frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns, ds.SamplesPerPixel)
            encoded = []
            for frame in frames:
                # rgb=False: no colour transform, so the photometric interpretation stays RGB.
                stream = bytes(
                    imagecodecs.htj2k_encode(
                        np.squeeze(frame), rgb=False, tlm=rpcl or None, tilepart=tilepart
                    )
                )
                _check_codestream(stream, self.uid)
                encoded.append(stream)
            ds.PixelData = encapsulate(encoded)
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
            if ds.SamplesPerPixel > 1:
                ds.PlanarConfiguration = 0
            ds.file_meta.TransferSyntaxUID = self.uid
            ds.save_as(target, enforce_file_format=True)


def _check_codestream(stream: bytes, uid: UID) -> None:
    """Refuse a codestream that does not meet the syntax it will be labelled with."""
    markers: dict[int, bytes] = {}
    at = 2  # after SOC
    while at + 4 <= len(stream) and stream[at] == 0xFF and stream[at + 1] != 0x90:  # to SOT
        (length,) = struct.unpack(">H", stream[at + 2 : at + 4])
        markers.setdefault(stream[at + 1], stream[at + 4 : at + 2 + length])
        at += 2 + length
    cod = markers.get(0x52)
    if stream[:2] != b"\xff\x4f" or 0x50 not in markers or cod is None:
        raise EncoderError("not an HTJ2K codestream (no SOC, CAP or COD marker)")
    reversible = cod[9] == 1
    if not reversible:
        raise EncoderError("HTJ2K lossless needs the reversible 5/3 wavelet")
    if uid == HTJ2KLosslessRPCL and (cod[1] != 2 or 0x55 not in markers):
        raise EncoderError("HTJ2K with RPCL options needs RPCL progression and a TLM marker")


RECIPES: tuple[_Recipe, ...] = (
    # 16-bit signed CT
    _Recipe("ct-dcmconv-explicit-le", ExplicitVRLittleEndian, _tool("dcmconv", "+te")),
    _Recipe("ct-dcmconv-implicit-le", ImplicitVRLittleEndian, _tool("dcmconv", "+ti")),
    _Recipe("ct-dcmconv-big-endian", ExplicitVRBigEndian, _tool("dcmconv", "+tb")),
    _Recipe("ct-dcmcjpeg-lossless-sv1", JPEGLosslessSV1, _tool("dcmcjpeg", "+e1", "+un")),
    _Recipe("ct-dcmcjpeg-lossless", JPEGLossless, _tool("dcmcjpeg", "+el", "+un")),
    _Recipe("ct-dcmcjpls-lossless", JPEGLSLossless, _tool("dcmcjpls", "+el", "+un")),
    _Recipe("ct-dcmcrle", RLELossless, _tool("dcmcrle")),
    _Recipe("ct-gdcmconv-j2k", JPEG2000Lossless, _tool("gdcmconv", "--j2k")),
    _Recipe("ct-pydicom-rle", RLELossless, _PydicomCompress(RLELossless)),
    _Recipe("ct-pydicom-jpegls", JPEGLSLossless, _PydicomCompress(JPEGLSLossless)),
    _Recipe("ct-pydicom-j2k", JPEG2000Lossless, _PydicomCompress(JPEG2000Lossless)),
    _Recipe("ct-htj2k-lossless", HTJ2KLossless, _HTJ2K(HTJ2KLossless)),
    _Recipe("ct-htj2k-rpcl", HTJ2KLosslessRPCL, _HTJ2K(HTJ2KLosslessRPCL)),
    # 8-bit RGB (dcmcjpeg +eb writes YBR_FULL_422)
    _Recipe("rgb-dcmcjpeg-baseline", JPEGBaseline8Bit, _tool("dcmcjpeg", "+eb", "+un"), False),
    _Recipe(
        "rgb-dcmcjpls-near-lossless",
        JPEGLSNearLossless,
        _tool("dcmcjpls", "+en", "+md", "2", "+un"),
        False,
    ),
    _Recipe("rgb-htj2k-lossless", HTJ2KLossless, _HTJ2K(HTJ2KLossless)),
    # 3 frames of 16-bit signed (see make_multiframe)
    _Recipe("multiframe-explicit-le", ExplicitVRLittleEndian, _tool("dcmconv", "+te")),
    _Recipe("multiframe-dcmcjpeg-lossless-sv1", JPEGLosslessSV1, _tool("dcmcjpeg", "+e1", "+un")),
    _Recipe("multiframe-pydicom-rle", RLELossless, _PydicomCompress(RLELossless)),
    _Recipe("multiframe-htj2k-lossless", HTJ2KLossless, _HTJ2K(HTJ2KLossless)),
)
