"""Seeds: real inputs the mutations start from.

- Part 10 objects: small pydicom test files covering every transfer syntax family,
  multi-frame, bit-packed, big endian, deflated, palette (normal and segmented),
  YBR_FULL_422, RTDOSE; a few Cornerstone3D test images when the corpus is present;
  and a few made here (segmented palette, Extended Offset Table, a cropped enhanced
  CT with functional groups, a PET with SUV attributes).
- Codestreams: frame 1 of each encapsulated seed with its pixel parameters, plus
  streams encoded here (HTJ2K, signed JPEG-LS and JPEG lossless, RLE, JPEG 2000),
  and native frames.
- DICOM JSON: the Cornerstone ``wadors/metadata`` response and the JSON of the
  Part 10 seeds' headers (palette LUTs as InlineBinary).
- Web images (PNG, JPEG with EXIF, GIF, TIFF, BMP) and NIfTI files (.nii, .nii.gz,
  NIfTI-2, big endian, 4-D).
"""

from __future__ import annotations

import functools
import io
import json
import struct
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from imageloader.decode.params import PixelParams
from imageloader.decode.syntaxes import SYNTAXES
from imageloader.dicom.part10 import parse_part10
from tests.corpus import CORNERSTONE

PYDICOM_SEEDS = (
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_padded.dcm",
    "emri_small.dcm",
    "emri_small_RLE.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "liver.dcm",
    "liver_expb_1frame.dcm",
    "SC_rgb_2frame.dcm",
    "SC_rgb_rle_2frame.dcm",
    "SC_rgb_rle_16bit.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "image_dfl.dcm",
    "OBXXXX1A_rle.dcm",
    "rtdose.dcm",
    "rtdose_1frame.dcm",
    "JPEGLSNearLossless_08.dcm",
    "SC_rgb_jls_lossy_line.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_dcmtk_+eb+cy+s2.dcm",
    "SC_jpeg_no_color_transform.dcm",
    "JPGExtended.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "JPEG2000.dcm",
    "GDCMJ2K_TextGBR.dcm",
    "US1_J2KI.dcm",
)
CORNERSTONE_SEEDS = (
    "CT0012.fragmented_no_bot_jpeg_baseline.51.dcm",
    "TestPattern_JPEG-Baseline_YBR422.dcm",
    "no-pixel-spacing.dcm",
    "no-pixel-data.dcm",
)


@dataclass(frozen=True)
class Seed:
    """A named input."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Stream:
    """A frame's bytes, its family, and the pixel parameters that decode it."""

    name: str
    family: str
    data: bytes
    params: PixelParams


def _quiet_read(source: Any, **kwargs: Any) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(source, **kwargs)


def _to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _new(**attributes: Any) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["fuzz"])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _segmented_palette() -> bytes:
    # Discrete 0, then a linear ramp to 65535 over 255 entries: 256 entries in all.
    words = struct.pack("<6H", 0, 1, 0, 1, 255, 65535)
    ds = _new(
        Modality="US",
        Rows=8,
        Columns=8,
        SamplesPerPixel=1,
        PhotometricInterpretation="PALETTE COLOR",
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelRepresentation=0,
        RedPaletteColorLookupTableDescriptor=[256, 0, 16],
        GreenPaletteColorLookupTableDescriptor=[256, 0, 16],
        BluePaletteColorLookupTableDescriptor=[256, 0, 16],
        SegmentedRedPaletteColorLookupTableData=words,
        SegmentedGreenPaletteColorLookupTableData=words,
        SegmentedBluePaletteColorLookupTableData=words,
        PixelData=bytes(range(0, 256, 4)),
    )
    return _to_bytes(ds)


def _extended_offsets() -> bytes:
    from pydicom.encaps import encapsulate_extended, generate_frames

    ds = _quiet_read(get_testdata_file("emri_small_jpeg_2k_lossless.dcm"))
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    data, offsets, lengths = encapsulate_extended(frames)
    ds.PixelData = data
    ds["PixelData"].is_undefined_length = True
    ds.ExtendedOffsetTable = offsets
    ds.ExtendedOffsetTableLengths = lengths
    return _to_bytes(ds)


def _enhanced() -> bytes:
    ds = _quiet_read(get_testdata_file("eCT_Supplemental.dcm"))
    ds.Rows = ds.Columns = 16
    ds.PixelData = np.arange(2 * 16 * 16, dtype="<u2").tobytes()
    return _to_bytes(ds)


def _pet() -> bytes:
    ds = _quiet_read(get_testdata_file("MR_small.dcm"))
    ds.Modality = "PT"
    ds.Units = "BQML"
    ds.CorrectedImage = ["ATTN", "DECY"]
    ds.DecayCorrection = "START"
    ds.PatientWeight = 70
    ds.SeriesDate = ds.AcquisitionDate = "20240102"
    ds.SeriesTime = ds.AcquisitionTime = "101500"
    radio = Dataset()
    radio.RadionuclideTotalDose = 370000000
    radio.RadionuclideHalfLife = 6586.2
    radio.RadiopharmaceuticalStartTime = "093000"
    ds.RadiopharmaceuticalInformationSequence = [radio]
    ds.RescaleSlope = 0.5
    ds.RescaleIntercept = 0
    return _to_bytes(ds)


@functools.cache
def part10_seeds() -> tuple[Seed, ...]:
    """Every Part 10 seed available here."""
    seeds = []
    for name in PYDICOM_SEEDS:
        path = get_testdata_file(name)
        if path is not None:
            with open(path, "rb") as fp:
                seeds.append(Seed(name, fp.read()))
    for name in CORNERSTONE_SEEDS:
        seeds.append(Seed(f"cornerstone/{name}", (CORNERSTONE / name).read_bytes()))
    for name, make in (
        ("made/segmented-palette", _segmented_palette),
        ("made/extended-offset-table", _extended_offsets),
        ("made/enhanced-ct", _enhanced),
        ("made/pet-suv", _pet),
    ):
        seeds.append(Seed(name, make()))
    return tuple(seeds)


def _encoded_streams() -> list[Stream]:
    import imagecodecs
    from rle.utils import encode_pixel_data

    rng = np.random.default_rng(7)
    grey = np.add.outer(np.arange(24), np.arange(32)) * 40 + rng.integers(0, 64, (24, 32))
    grey = grey.astype(np.uint16)
    signed = (grey.astype(np.int32) - 800).astype(np.int16)
    rgb = np.stack([grey >> 4, (grey >> 4)[::-1], 255 - (grey >> 4)], -1).astype(np.uint8)

    def params(uid: str, image: np.ndarray, pi: str | None = None, stored: int = 12) -> PixelParams:
        samples = 1 if image.ndim == 2 else image.shape[2]
        bits = 8 if image.dtype == np.uint8 else 16
        return PixelParams(
            uid,
            image.shape[0],
            image.shape[1],
            samples,
            bits,
            8 if bits == 8 else stored,
            1 if image.dtype.kind == "i" else 0,
            pi or ("MONOCHROME2" if samples == 1 else "RGB"),
            rescale_slope=1.0,
            rescale_intercept=-1024.0,
            modality="CT",
        )

    def rle(image: np.ndarray) -> bytes:
        samples = 1 if image.ndim == 2 else image.shape[2]
        return bytes(
            encode_pixel_data(
                image.tobytes(),
                rows=image.shape[0],
                columns=image.shape[1],
                samples_per_pixel=samples,
                bits_allocated=image.dtype.itemsize * 8,
                byteorder="<",
            )
        )

    unsigned = signed.view(np.uint16)
    made = [
        ("htj2k-grey", "1.2.840.10008.1.2.4.201", grey, imagecodecs.htj2k_encode, None),
        ("htj2k-rgb", "1.2.840.10008.1.2.4.203", rgb, imagecodecs.htj2k_encode, None),
        ("j2k-signed", "1.2.840.10008.1.2.4.90", signed, imagecodecs.jpeg2k_encode, None),
        (
            "jpegls-signed",
            "1.2.840.10008.1.2.4.80",
            signed,
            lambda a: imagecodecs.jpegls_encode(unsigned),
            None,
        ),
        (
            "jpeg-lossless-signed",
            "1.2.840.10008.1.2.4.57",
            signed,
            lambda a: imagecodecs.jpeg8_encode(
                unsigned, lossless=True, predictor=1, bitspersample=16
            ),
            None,
        ),
        ("rle-signed", "1.2.840.10008.1.2.5", signed, rle, None),
        ("rle-rgb", "1.2.840.10008.1.2.5", rgb, rle, None),
    ]
    streams = []
    for name, uid, image, encode, pi in made:
        try:
            data = bytes(encode(image))
        except Exception:  # an encoder this imagecodecs build lacks
            continue
        stored = 16 if image.dtype.kind == "i" else 12
        streams.append(
            Stream(f"made/{name}", SYNTAXES[uid].family.value, data, params(uid, image, pi, stored))
        )
    return streams


@functools.cache
def codestream_seeds() -> tuple[Stream, ...]:
    """Frame 1 of every seed that parses (native and encapsulated), and made streams."""
    streams = []
    for seed in part10_seeds():
        try:
            obj = parse_part10(seed.data, image_id=seed.name)
            params = obj.pixel_params(1)
            frame = bytes(obj.frame(1))
        except Exception:
            continue
        syntax = SYNTAXES.get(params.transfer_syntax_uid)
        if syntax is not None:
            streams.append(Stream(seed.name, syntax.family.value, frame, params))
    return tuple(streams + _encoded_streams())


def streams_of(family: str) -> tuple[Stream, ...]:
    """The codestream seeds of one family."""
    return tuple(s for s in codestream_seeds() if s.family == family)


@functools.cache
def json_seeds() -> tuple[tuple[str, dict[str, Any]], ...]:
    """DICOM JSON datasets: a real server response and the Part 10 seeds' headers."""
    seeds: list[tuple[str, dict[str, Any]]] = []
    metadata = CORNERSTONE / "wadors" / "metadata"
    for index, item in enumerate(json.loads(metadata.read_text())):
        seeds.append((f"cornerstone/wadors/metadata[{index}]", item))
    for seed in part10_seeds():
        try:
            ds = _quiet_read(io.BytesIO(seed.data))
        except Exception:
            continue
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in ds:
                delattr(ds, keyword)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                as_json = ds.to_json_dict(bulk_data_threshold=1 << 20)
        except Exception:
            continue
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "TransferSyntaxUID" in meta:
            as_json["00020010"] = {"vr": "UI", "Value": [str(meta.TransferSyntaxUID)]}
        seeds.append((seed.name, as_json))
    return tuple(seeds)


@functools.cache
def web_seeds() -> tuple[Seed, ...]:
    """Small images in the formats and modes the web loader meets."""
    from PIL import Image

    rng = np.random.default_rng(3)
    grey = rng.integers(0, 255, (12, 16), dtype=np.uint8)
    seeds = []

    def save(name: str, image: Image.Image, fmt: str, **options: Any) -> None:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        seeds.append(Seed(name, buffer.getvalue()))

    save("L.png", Image.fromarray(grey), "PNG")
    save("I16.png", Image.fromarray(grey.astype(np.uint16) * 257), "PNG")
    rgb = Image.fromarray(np.dstack([grey, grey[::-1], 255 - grey]))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    save("rgb-exif.jpg", rgb, "JPEG", exif=exif.tobytes())
    save("rgba.png", rgb.convert("RGBA"), "PNG")
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save("p-transparent.png", palette, "PNG", transparency=0)
    save("1.png", Image.fromarray(grey > 128), "PNG")
    save("anim.gif", palette, "GIF", save_all=True, append_images=[palette.rotate(90)])
    save("F.tif", Image.fromarray(grey.astype(np.float32) / 7), "TIFF")
    save("rgb.bmp", rgb, "BMP")
    return tuple(seeds)


@functools.cache
def nifti_seeds() -> tuple[Seed, ...]:
    """Small NIfTI-1 and NIfTI-2 files, plain and gzipped, written by nibabel."""
    from tests.nifti._volumes import nifti_bytes

    rng = np.random.default_rng(5)
    cube = rng.integers(-1000, 2000, (6, 5, 4)).astype(np.int16)
    series = rng.random((4, 3, 2, 3)).astype(np.float32)
    return (
        Seed("int16.nii", nifti_bytes(cube, slope=2.0, inter=-10.0)),
        Seed("int16.nii.gz", nifti_bytes(cube, gz=True)),
        Seed("big-endian.nii", nifti_bytes(cube.astype(">i2"))),
        Seed("float32-4d.nii.gz", nifti_bytes(series, gz=True)),
        Seed("v2.nii", nifti_bytes(cube.astype(np.uint8), version=2)),
    )
