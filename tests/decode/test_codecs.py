"""Codecs one by one, the registry's order and errors, and hostile codestreams.

Codestreams are made here with the encoders in imagecodecs and pylibjpeg-rle, so
these tests need no test images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tracemalloc
from collections.abc import Callable
from typing import Any

import imagecodecs
import numpy as np
import pytest

from imageloader.decode.codecs import Codec, CodecOutput, CodecRegistry, default_registry
from imageloader.decode.params import DecodeOptions, PixelParams
from imageloader.decode.syntaxes import (
    SYNTAXES,
    CodestreamInfo,
    Family,
    jpeg_is_ycbcr,
    read_header,
    sniff,
)
from imageloader.decode.worker import decode_frame
from imageloader.errors import DecodeError, ImageTooLargeError, UnsupportedTransferSyntaxError

STORED = DecodeOptions(prescale=False)
rng = np.random.default_rng(2024)  # only for the module-level images below
# A smooth 12-bit image with noise (compressible, but not trivially), and its signed twin.
GREY = (np.add.outer(np.arange(48), np.arange(64)) * 36 + rng.integers(0, 64, (48, 64))).astype(
    np.uint16
)
SIGNED = (GREY.astype(np.int16) - 2048).astype(np.int16)
RGB = np.stack([GREY >> 4, (GREY >> 4)[::-1], 255 - (GREY >> 4)], -1).astype(np.uint8)


def params(uid: str, image: np.ndarray, pi: str | None = None, **more: Any) -> PixelParams:
    samples = 1 if image.ndim == 2 else image.shape[2]
    bits = {np.dtype(np.uint8): 8}.get(image.dtype, 16)
    return PixelParams(
        transfer_syntax_uid=uid,
        rows=image.shape[0],
        columns=image.shape[1],
        samples_per_pixel=samples,
        bits_allocated=bits,
        bits_stored=more.pop("bits_stored", 12 if bits == 16 else 8),
        pixel_representation=1 if image.dtype.kind == "i" else 0,
        photometric_interpretation=pi or ("MONOCHROME2" if samples == 1 else "RGB"),
        **more,
    )


def rle(image: np.ndarray) -> bytes:
    from rle.utils import encode_pixel_data

    samples = 1 if image.ndim == 2 else image.shape[2]
    return encode_pixel_data(
        image.tobytes(),
        rows=image.shape[0],
        columns=image.shape[1],
        samples_per_pixel=samples,
        bits_allocated=image.dtype.itemsize * 8,
        byteorder="<",
    )


@dataclasses.dataclass
class Stream:
    """A lossless codestream of ``image`` under ``uid``."""

    uid: str
    image: np.ndarray
    encode: Callable[[np.ndarray], bytes]
    pi: str | None = None

    @property
    def data(self) -> bytes:
        return bytes(self.encode(self.image))

    @property
    def params(self) -> PixelParams:
        return params(self.uid, self.image, self.pi)


def _jpeg_lossless(predictor: int) -> Callable[[np.ndarray], bytes]:
    def encode(image: np.ndarray) -> bytes:
        bits = 8 if image.dtype == np.uint8 else 16
        source = image.view(np.uint16) if image.dtype == np.int16 else image
        return imagecodecs.jpeg8_encode(
            source, lossless=True, predictor=predictor, bitspersample=bits
        )

    return encode


def _unsigned(image: np.ndarray) -> np.ndarray:
    return image.view(np.uint16) if image.dtype == np.int16 else image


LOSSLESS = {
    "rle-grey": Stream("1.2.840.10008.1.2.5", GREY, rle),
    "rle-signed": Stream("1.2.840.10008.1.2.5", SIGNED, rle),
    "rle-rgb": Stream("1.2.840.10008.1.2.5", RGB, rle),
    **{
        f"jpeg-lossless-p{p}": Stream("1.2.840.10008.1.2.4.57", SIGNED, _jpeg_lossless(p))
        for p in range(1, 8)
    },
    "jpeg-lossless-sv1-rgb": Stream("1.2.840.10008.1.2.4.70", RGB, _jpeg_lossless(1)),
    "jpeg-ls-grey": Stream("1.2.840.10008.1.2.4.80", GREY, imagecodecs.jpegls_encode),
    "jpeg-ls-signed": Stream(
        "1.2.840.10008.1.2.4.80", SIGNED, lambda a: imagecodecs.jpegls_encode(_unsigned(a))
    ),
    "jpeg-ls-rgb": Stream("1.2.840.10008.1.2.4.80", RGB, imagecodecs.jpegls_encode),
    "j2k-grey": Stream(
        "1.2.840.10008.1.2.4.90", GREY, lambda a: imagecodecs.jpeg2k_encode(a, reversible=True)
    ),
    "j2k-signed": Stream(
        "1.2.840.10008.1.2.4.90", SIGNED, lambda a: imagecodecs.jpeg2k_encode(a, reversible=True)
    ),
    "j2k-rct": Stream(
        "1.2.840.10008.1.2.4.90",
        RGB,
        lambda a: imagecodecs.jpeg2k_encode(a, reversible=True),
        pi="YBR_RCT",
    ),
    "htj2k-grey": Stream(
        "1.2.840.10008.1.2.4.201", GREY, lambda a: imagecodecs.htj2k_encode(a, reversible=True)
    ),
    "htj2k-signed": Stream(
        "1.2.840.10008.1.2.4.202", SIGNED, lambda a: imagecodecs.htj2k_encode(a, reversible=True)
    ),
    "htj2k-rgb": Stream(
        "1.2.840.10008.1.2.4.201", RGB, lambda a: imagecodecs.htj2k_encode(a, reversible=True)
    ),
}


def _cases() -> list[tuple[str, str]]:
    registry = default_registry()
    return [
        (name, codec.name)
        for name, stream in LOSSLESS.items()
        for codec in registry.codecs(SYNTAXES[stream.uid].family)
    ]


def only(*names: str) -> CodecRegistry:
    """A fresh default registry with every codec but ``names`` disabled."""
    registry = default_registry()
    registry.disable(*(c.name for c in list(registry) if c.name not in names))
    return registry


@pytest.mark.parametrize(("stream", "codec"), _cases())
def test_each_codec_decodes_lossless_streams_exactly(stream: str, codec: str) -> None:
    case = LOSSLESS[stream]
    registry = only(codec)
    frame = decode_frame(case.data, case.params, STORED, image_id=stream, registry=registry)
    assert frame.codec == codec
    expected = case.image
    np.testing.assert_array_equal(frame.pixels, expected)
    if expected.ndim == 2:
        assert frame.pixels.dtype == (np.int16 if expected.dtype == np.int16 else np.uint16)


def test_lossy_jpeg_codecs_agree() -> None:
    """Both libjpeg-turbo bindings give identical pixels; libjpeg (Richter) differs slightly."""
    for image, pi in ((GREY >> 4).astype(np.uint8), "MONOCHROME2"), (RGB, "YBR_FULL_422"):
        data = imagecodecs.jpeg8_encode(image, level=80)
        p = params("1.2.840.10008.1.2.4.50", image, pi)
        turbo = decode_frame(data, p, STORED, registry=only("imagecodecs-jpeg8")).pixels
        pillow = decode_frame(data, p, STORED, registry=only("pillow")).pixels
        richter = decode_frame(data, p, STORED, registry=only("pylibjpeg-libjpeg")).pixels
        np.testing.assert_array_equal(turbo, pillow)
        difference = np.abs(turbo.astype(int) - richter)
        assert difference.max() <= 4 and difference.mean() < 1


def test_pillow_refuses_12_bit_and_the_registry_moves_on() -> None:
    data = imagecodecs.jpeg8_encode(GREY, level=90, bitspersample=12)
    p = params("1.2.840.10008.1.2.4.51", GREY)
    frame = decode_frame(data, p, STORED, registry=only("pillow", "pylibjpeg-libjpeg"))
    assert frame.codec == "pylibjpeg-libjpeg"
    with pytest.raises(DecodeError, match="pillow: 8-bit JPEG only, not 12-bit"):
        decode_frame(data, p, STORED, registry=only("pillow"))


def test_default_order_uses_the_fastest_codec() -> None:
    chosen = {
        name: decode_frame(stream.data, stream.params, STORED).codec
        for name, stream in LOSSLESS.items()
        if name in ("rle-grey", "jpeg-lossless-p1", "jpeg-ls-grey", "j2k-grey", "htj2k-grey")
    }
    assert chosen == {
        "rle-grey": "imagecodecs-dicomrle",
        "jpeg-lossless-p1": "imagecodecs-jpeg8",
        "jpeg-ls-grey": "imagecodecs-jpegls",
        "j2k-grey": "imagecodecs-jpeg2k",
        "htj2k-grey": "imagecodecs-htj2k",
    }


# -- missing codecs -------------------------------------------------------------------------


def test_no_installed_codec_is_unsupported_transfer_syntax() -> None:
    stream = LOSSLESS["jpeg-ls-grey"]
    registry = default_registry()
    registry.disable("imagecodecs-jpegls", "pyjpegls", "pylibjpeg-libjpeg")
    with pytest.raises(UnsupportedTransferSyntaxError) as caught:
        decode_frame(stream.data, stream.params, image_id="ls-1", registry=registry)
    error = caught.value
    assert error.transfer_syntax_uid == "1.2.840.10008.1.2.4.80"
    assert error.install == "imagecodecs"
    assert error.image_id == "ls-1"
    assert "pyjpegls" in str(error) and "install imagecodecs" in str(error)


def test_a_disabled_codec_falls_back_to_the_next() -> None:
    stream = LOSSLESS["jpeg-ls-grey"]
    registry = default_registry()
    registry.disable("imagecodecs-jpegls")
    assert decode_frame(stream.data, stream.params, registry=registry).codec == "pyjpegls"


def test_a_codec_whose_package_is_absent_is_skipped() -> None:
    stream = LOSSLESS["rle-grey"]

    def never(data: Any, p: PixelParams, info: CodestreamInfo | None) -> CodecOutput:
        raise AssertionError("an absent package must not be called")

    ghost = Codec("ghost-rle", frozenset({Family.RLE}), "no_such_module_xyz", "ghost-rle", never)
    registry = CodecRegistry([ghost])
    with pytest.raises(UnsupportedTransferSyntaxError) as caught:
        decode_frame(stream.data, stream.params, registry=registry)
    assert caught.value.install == "ghost-rle"
    registry.register(default_registry().codecs(Family.RLE)[0])
    assert (
        decode_frame(stream.data, stream.params, registry=registry).codec == "imagecodecs-dicomrle"
    )


def test_a_codec_raising_import_error_counts_as_missing() -> None:
    def broken(data: Any, p: PixelParams, info: CodestreamInfo | None) -> CodecOutput:
        raise ImportError("built without DICOMRLE")

    registry = CodecRegistry([Codec("half", frozenset({Family.RLE}), "numpy", "half-pkg", broken)])
    stream = LOSSLESS["rle-grey"]
    with pytest.raises(UnsupportedTransferSyntaxError, match="half-pkg"):
        decode_frame(stream.data, stream.params, registry=registry)


def test_unknown_transfer_syntax() -> None:
    p = params("1.2.840.10008.1.2.4.100", GREY)  # MPEG-2
    with pytest.raises(UnsupportedTransferSyntaxError) as caught:
        decode_frame(b"\x00" * 8, p, image_id="mpeg")
    assert caught.value.install is None and caught.value.image_id == "mpeg"


def test_registering_twice_is_refused() -> None:
    registry = default_registry()
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.codecs(Family.RLE)[0])


# -- hostile input --------------------------------------------------------------------------


def _damaged(data: bytes) -> dict[str, bytes]:
    rng = np.random.default_rng(len(data))  # the same damage whichever tests run
    body = bytearray(data)
    middle = len(body) // 2
    body[middle : middle + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    return {
        "half": data[: len(data) // 2],
        "header-only": data[:40],
        "no-end-marker": data[:-2],
        "empty": b"",
        "garbage": rng.integers(0, 256, len(data), dtype=np.uint8).tobytes(),
        "scrambled-middle": bytes(body),
    }


DAMAGE = ["half", "header-only", "no-end-marker", "empty", "garbage", "scrambled-middle"]


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize(
    "stream", ["rle-rgb", "jpeg-lossless-p1", "jpeg-ls-grey", "j2k-grey", "htj2k-grey"]
)
def test_damaged_codestreams_raise_decode_error_only(stream: str, damage: str) -> None:
    case = LOSSLESS[stream]
    data = _damaged(case.data)[damage]
    truncated = damage in ("half", "header-only", "empty") or (
        damage == "no-end-marker" and not stream.startswith("rle")
    )
    if truncated:
        with pytest.raises(DecodeError) as caught:
            decode_frame(data, case.params, image_id=f"{stream}/{damage}")
        assert caught.value.image_id == f"{stream}/{damage}"
    else:
        # A scrambled body can still be a valid codestream; if it fails, with our error.
        with contextlib.suppress(DecodeError):
            decode_frame(data, case.params, image_id=f"{stream}/{damage}")


@pytest.mark.parametrize("codec", [c.name for c in default_registry()])
def test_every_codec_failure_becomes_a_decode_error_naming_it(codec: str) -> None:
    registry = only(codec)
    families = next(c for c in list(registry) if c.name == codec).families
    baseline = Stream(
        "1.2.840.10008.1.2.4.50", RGB, lambda a: imagecodecs.jpeg8_encode(a, level=90)
    )
    stream = next(s for s in [*LOSSLESS.values(), baseline] if _family(s.uid) in families)
    good = stream.data
    # The codestream's magic and end marker around noise, handed to the registry
    # itself (decode_frame refuses such headers before any codec runs): the codec
    # must fail, and its failure must come out as our error.
    noise = np.random.default_rng(300).integers(0, 256, 300, dtype=np.uint8).tobytes()
    data = good[:2] + noise + b"\xff\xd9"
    with pytest.raises(DecodeError, match=codec) as caught:
        registry.decode(_family(stream.uid), data, stream.params, None, image_id="n")
    assert caught.value.image_id == "n"
    assert not isinstance(caught.value, UnsupportedTransferSyntaxError)


def _family(uid: str) -> Family:
    return SYNTAXES[uid].family


def _spy_registry(calls: list[str]) -> CodecRegistry:
    def spy(data: Any, p: PixelParams, info: CodestreamInfo | None) -> CodecOutput:
        calls.append("decoded")
        raise AssertionError("must be refused before decoding")

    families = frozenset(Family) - {Family.NATIVE}
    return CodecRegistry([Codec("spy", families, "numpy", "numpy", spy)])


def _jpeg_bomb(rows: int, columns: int) -> bytes:
    sof = bytes([0xFF, 0xC0, 0, 11, 8]) + rows.to_bytes(2, "big") + columns.to_bytes(2, "big")
    return b"\xff\xd8" + sof + bytes([1, 1, 0x11, 0]) + b"\xff\xda\x00\x08" + bytes(6) + b"\xff\xd9"


def _j2k_bomb(rows: int, columns: int) -> bytes:
    siz = (
        b"\xff\x51"
        + (41).to_bytes(2, "big")
        + bytes(2)
        + columns.to_bytes(4, "big")
        + rows.to_bytes(4, "big")
        + bytes(8)
        + columns.to_bytes(4, "big")
        + rows.to_bytes(4, "big")
        + bytes(8)
        + (1).to_bytes(2, "big")
        + bytes([7, 1, 1])
    )
    return b"\xff\x4f" + siz + b"\xff\x90" + bytes(10) + b"\xff\xd9"


@pytest.mark.parametrize(
    ("uid", "bomb"),
    [
        ("1.2.840.10008.1.2.4.50", _jpeg_bomb(65535, 65535)),
        ("1.2.840.10008.1.2.4.80", _jpeg_bomb(65535, 65535).replace(b"\xff\xc0", b"\xff\xf7")),
        ("1.2.840.10008.1.2.4.90", _j2k_bomb(100_000, 100_000)),
        ("1.2.840.10008.1.2.4.201", _j2k_bomb(100_000, 100_000)),
    ],
)
def test_decompression_bomb_header_is_refused_before_decoding(uid: str, bomb: bytes) -> None:
    p = params(uid, (GREY >> 4).astype(np.uint8))
    calls: list[str] = []
    with pytest.raises(ImageTooLargeError, match="codestream claims"):
        decode_frame(bomb, p, image_id="bomb", registry=_spy_registry(calls))
    assert calls == []
    # With the real codecs too, nothing big is allocated.
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError):
            decode_frame(bomb, p, image_id="bomb")
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def test_header_size_disagreeing_with_the_pixel_module_is_refused() -> None:
    calls: list[str] = []
    p = params("1.2.840.10008.1.2.4.90", GREY)
    with pytest.raises(DecodeError, match="codestream is 4000x4000"):
        decode_frame(_j2k_bomb(4000, 4000), p, registry=_spy_registry(calls))
    assert calls == []


def test_pixel_module_over_the_limit_is_refused_before_reading() -> None:
    p = dataclasses.replace(params("1.2.840.10008.1.2.1", GREY), rows=70000, columns=70000)
    with pytest.raises(ImageTooLargeError, match="exceeds the limit"):
        decode_frame(b"", p, image_id="huge")
    small = params("1.2.840.10008.1.2.1", GREY)
    with pytest.raises(ImageTooLargeError):
        decode_frame(GREY.tobytes(), small, max_frame_pixels=1000)


# -- headers, sniffing, colour transform ------------------------------------------------------


def test_read_header() -> None:
    cases = {
        Family.JPEG: imagecodecs.jpeg8_encode(RGB, level=90),
        Family.JPEG_LOSSLESS: LOSSLESS["jpeg-lossless-p3"].data,
        Family.JPEG_LS: LOSSLESS["jpeg-ls-rgb"].data,
        Family.JPEG2000: LOSSLESS["j2k-signed"].data,
        Family.HTJ2K: LOSSLESS["htj2k-grey"].data,
    }
    for family, data in cases.items():
        info = read_header(data, family)
        assert info is not None and info.family is family
        assert (info.rows, info.columns) == (48, 64)
        assert sniff(data) is family
    assert read_header(cases[Family.JPEG_LS], Family.JPEG_LS).components == 3
    assert read_header(cases[Family.JPEG2000], Family.JPEG2000).signed is True
    assert read_header(cases[Family.JPEG2000], Family.JPEG2000).precision == 16
    assert read_header(cases[Family.JPEG], Family.JPEG).jfif
    assert sniff(b"\x02\x00\x00\x00" + bytes(60)) is None
    assert read_header(b"\xff\xd8\xff", Family.JPEG) is None


def test_jp2_wrapped_codestream() -> None:
    data = imagecodecs.jpeg2k_encode(GREY, reversible=True, codecformat="JP2")
    info = read_header(data, Family.JPEG2000)
    assert info is not None and (info.rows, info.columns) == (48, 64)
    frame = decode_frame(data, params("1.2.840.10008.1.2.4.90", GREY), STORED)
    np.testing.assert_array_equal(frame.pixels, GREY)


def _info(
    adobe: int | None = None, jfif: bool = False, ids: tuple[int, ...] = (1, 2, 3)
) -> CodestreamInfo:
    return CodestreamInfo(Family.JPEG, 8, 8, 3, 8, None, adobe, jfif, ids)


@pytest.mark.parametrize(
    ("info", "pi", "ycbcr"),
    [
        (_info(adobe=1), "RGB", True),
        (_info(adobe=0), "YBR_FULL_422", False),
        (_info(jfif=True), "RGB", True),
        (_info(ids=(ord("R"), ord("G"), ord("B"))), "YBR_FULL", False),
        (_info(), "YBR_FULL_422", True),
        (_info(), "YBR_FULL", True),
        (_info(), "RGB", False),  # libjpeg would guess YCbCr; the DICOM header knows better
        (dataclasses.replace(_info(), family=Family.JPEG_LOSSLESS), "YBR_FULL", False),
    ],
)
def test_jpeg_colour_transform_rule(info: CodestreamInfo, pi: str, ycbcr: bool) -> None:
    assert jpeg_is_ycbcr(info, pi, 3) is ycbcr
    assert jpeg_is_ycbcr(info, pi, 1) is False


def _without_colour_markers(jpeg: bytes) -> bytes:
    # Adobe APP14 -> comment; component ids 'R','G','B' -> 1, 2, 3 (in SOF and SOS).
    body = jpeg.replace(b"\xff\xee\x00\x0eAdobe", b"\xff\xfe\x00\x0eAdobe")
    body = body.replace(
        b"\x03R\x11\x00G\x11\x00B\x11\x00", b"\x03\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    )
    return body.replace(b"\x03R\x00G\x00B\x00", b"\x03\x01\x00\x02\x00\x03\x00")


def test_rgb_jpeg_without_markers_follows_the_photometric_interpretation() -> None:
    raw = imagecodecs.jpeg8_encode(RGB, level=95, colorspace="RGB", outcolorspace="RGB")
    bare = _without_colour_markers(raw)
    info = read_header(bare, Family.JPEG)
    assert info is not None and info.adobe_transform is None and info.component_ids == (1, 2, 3)
    # libjpeg alone would take these samples for YCbCr; photometric RGB says they are not.
    as_rgb = decode_frame(bare, params("1.2.840.10008.1.2.4.50", RGB, "RGB"))
    assert np.abs(as_rgb.pixels.astype(int) - RGB).mean() < 2
    as_ybr = decode_frame(bare, params("1.2.840.10008.1.2.4.50", RGB, "YBR_FULL"))
    assert np.abs(as_ybr.pixels.astype(int) - RGB).mean() > 20


# -- mislabelled frames ---------------------------------------------------------------------


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
@pytest.mark.parametrize("stream", ["htj2k-signed", "htj2k-rgb", "j2k-grey", "jpeg-ls-grey"])
def test_codestream_labelled_as_native_is_sniffed(uid: str, stream: str) -> None:
    """Orthanc serves HTJ2K frames under an uncompressed transfer syntax."""
    case = LOSSLESS[stream]
    frame = decode_frame(
        case.data, dataclasses.replace(case.params, transfer_syntax_uid=uid), STORED
    )
    expected = {
        "htj2k": "imagecodecs-htj2k",
        "j2k": "imagecodecs-jpeg2k",
        "jpeg": "imagecodecs-jpegls",
    }
    assert frame.codec == expected[stream.split("-")[0]]
    np.testing.assert_array_equal(frame.pixels, case.image)


def test_wrong_length_native_frame_that_is_no_codestream() -> None:
    p = params("1.2.840.10008.1.2.1", GREY)
    with pytest.raises(
        DecodeError, match=f"frame has 100 bytes but the pixel module needs {GREY.nbytes}"
    ):
        decode_frame(bytes(100), p, image_id="short")


# -- found by fuzzing (tests/fuzz/test_fuzz_decode.py) --------------------------------------
# The codec libraries trust their headers. Each input below crashed, hung or exhausted
# a process before decode_frame checked the structure the codec relies on; the
# structure is now checked first, so none of them reaches a codec.


def _part10_frame(name: str) -> tuple[bytes, PixelParams]:
    from pydicom.data import get_testdata_file

    from imageloader.dicom.part10 import parse_part10

    obj = parse_part10(str(get_testdata_file(name)))
    return bytes(obj.frame(1)), obj.pixel_params(1)


def _set(data: bytes, offset: int, value: int, width: int, order: str = "big") -> bytes:
    return data[:offset] + value.to_bytes(width, order) + data[offset + width :]


def _sof_height_at(data: bytes) -> int:
    return data.index(b"\xff\xc3") + 5  # lossless frame header: FF C3, length, precision


def _crashers() -> dict[str, tuple[str, bytes, PixelParams]]:
    """name: (the codec it crashed, the frame, its pixel parameters)."""
    rle, rle_params = _part10_frame("emri_small_RLE.dcm")
    ljpeg, ljpeg_params = _part10_frame("SC_rgb_jpeg_gdcm.dcm")
    htj2k, lossless = LOSSLESS["htj2k-grey"], LOSSLESS["jpeg-lossless-p1"]
    no_height = _set(lossless.data, _sof_height_at(lossless.data), 0, 2)
    return {
        # imagecodecs.dicomrle_decode: SIGSEGV (a segment offset far past the frame)
        "rle-offset": ("imagecodecs-dicomrle", _set(rle, 8, 0x7FFFFFFF, 4, "little"), rle_params),
        # imagecodecs.ljpeg_decode: SIGSEGV (a marker segment one byte longer than it is)
        "segment-length": (
            "imagecodecs-ljpeg",
            _set(ljpeg, 20, int.from_bytes(ljpeg[20:22], "big") + 1, 2),
            ljpeg_params,
        ),
        # imagecodecs.htj2k_decode (OpenJPH): SIGFPE (tile width XTsiz of 0)
        "tile-width": ("imagecodecs-htj2k", _set(htj2k.data, 24, 0, 4), htj2k.params),
        # pylibjpeg-libjpeg: memory until the process is killed (height 0, no DNL marker)
        "no-height": ("pylibjpeg-libjpeg", no_height, lossless.params),
        # imagecodecs.jpegsof3_decode: heap corruption, SIGSEGV later (height from DNL)
        "dnl-height": (
            "imagecodecs-jpegsof3",
            no_height[:-2] + b"\xff\xdc\x00\x04" + (48).to_bytes(2, "big") + b"\xff\xd9",
            lossless.params,
        ),
    }


@pytest.mark.parametrize("name", ["rle-offset", "segment-length", "tile-width", "no-height"])
def test_unsafe_headers_are_refused_before_any_codec(name: str) -> None:
    _, data, p = _crashers()[name]
    calls: list[str] = []
    with pytest.raises(DecodeError) as caught:
        decode_frame(data, p, image_id=name, registry=_spy_registry(calls))
    assert calls == []
    assert caught.value.image_id == name


def test_crashing_inputs_end_as_decode_errors_with_the_codec_that_crashed() -> None:
    # In a child process: before the checks, each of these killed the process that
    # decoded it. Now each is a DecodeError and the process lives on.
    import pickle
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    script = (
        "import pickle, resource, sys\n"
        "from imageloader.decode.codecs import default_registry\n"
        "from imageloader.decode.worker import decode_frame\n"
        "from imageloader.errors import DecodeError\n"
        "cases = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
        "for name, (codec, data, params) in cases.items():\n"
        "    registry = default_registry()\n"
        "    registry.disable(*(c.name for c in registry if c.name != codec))\n"
        "    for _ in range(5):  # heap damage shows after a few calls\n"
        "        try:\n"
        "            decode_frame(data, params, registry=registry)\n"
        "            outcome = 'decoded'\n"
        "        except DecodeError:\n"
        "            outcome = 'DecodeError'\n"
        "    print(name, outcome, flush=True)\n"
    )
    cases = _crashers()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cases.pickle"
        path.write_bytes(pickle.dumps(cases))
        repo = Path(__file__).resolve().parents[2]
        done = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr[-2000:])
    assert done.stdout.split() == [word for name in cases for word in (name, "DecodeError")]


def test_a_dnl_marker_gives_the_height_to_a_codec_that_reads_it() -> None:
    codec, data, p = _crashers()["dnl-height"]
    assert codec == "imagecodecs-jpegsof3"
    # Only pylibjpeg-libjpeg reads DNL; the codecs before it fail cleanly.
    frame = decode_frame(data, p, options=STORED)
    np.testing.assert_array_equal(frame.pixels, SIGNED)
    assert frame.codec == "pylibjpeg-libjpeg"
    # A DNL height that is not the pixel module's is refused before decoding.
    wrong = data.replace(b"\xff\xdc\x00\x04\x00\x30", b"\xff\xdc\x00\x04\xff\xff")
    with pytest.raises(DecodeError, match="codestream is 65535x64"):
        decode_frame(wrong, p, registry=_spy_registry([]))


class _Panic(BaseException):
    """What pyo3 raises for a Rust panic: a BaseException, not an Exception."""


def test_a_codec_panic_is_that_codecs_failure() -> None:
    def panic(data: Any, p: PixelParams, info: CodestreamInfo | None) -> CodecOutput:
        raise _Panic("index out of bounds: the len is 8064 but the index is 8065")

    stream = LOSSLESS["rle-grey"]
    registry = CodecRegistry([Codec("panics", frozenset({Family.RLE}), "numpy", "numpy", panic)])
    with pytest.raises(DecodeError, match="panics: _Panic: index out of bounds"):
        decode_frame(stream.data, stream.params, registry=registry)
    # The next codec is tried, as after any other failure.
    registry.register(next(c for c in default_registry() if c.name == "pydicom-rle"))
    frame = decode_frame(stream.data, stream.params, options=STORED, registry=registry)
    np.testing.assert_array_equal(frame.pixels, GREY)
    # pylibjpeg-rle panics on a frame with more rows than the pixel module (found by
    # fuzzing: Rows one too small). Alone, that is a DecodeError naming it; in the
    # default order the panic no longer escapes and the next codec (pydicom's, which
    # keeps the rows asked for) is tried.
    rle, rle_params = _part10_frame("emri_small_RLE.dcm")
    short = dataclasses.replace(rle_params, rows=rle_params.rows - 1)
    with pytest.raises(DecodeError, match="pylibjpeg-rle: PanicException"):
        decode_frame(rle, short, registry=only("pylibjpeg-rle"))
    frame = decode_frame(rle, short)
    assert (frame.codec, frame.pixels.shape) == ("pydicom-rle", (63, 64))
