"""``decode_frame``: one frame's bytes to pixels, in a worker process (or in-process).

Runs in spawned decode workers, so it imports only numpy and this package's
decode modules; codec packages are imported on first use. The steps:

1. refuse frames over ``max_frame_pixels``, or that would need more than
   ``max_frame_bytes`` decoded, before touching the data;
2. native frames are read directly; a native frame of the wrong length that is
   really a JPEG or JPEG 2000 codestream (Orthanc labels HTJ2K frames as
   uncompressed) goes to that codec; an encapsulated frame's header is checked
   against the limits (what decoding it will cost: size, components, bit depth,
   JPEG 2000 tiles) and against the pixel module, then the codecs are tried in order;
3. the pixel contract: stored values (sign extension), then colour to RGB(A)
   uint8, or the modality LUT (preScale) for greyscale.

Every failure is an :mod:`imageloader.errors` exception naming the imageId.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import (
    DecodeError,
    ImageLoaderError,
    ImageTooLargeError,
    UnsupportedTransferSyntaxError,
)
from ..image import PreScale
from ..limits import DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_FRAME_PIXELS
from . import color, pixels, reduce
from .codecs import CONTROL_FLOW, CodecOutput, CodecRegistry, shared_registry
from .params import DecodedFrame, DecodeOptions, PixelParams
from .syntaxes import (
    SYNTAXES,
    CodestreamInfo,
    Family,
    TransferSyntax,
    dnl_height,
    has_end_marker,
    header_problem,
    read_header,
    rle_segment_count,
    sample_bytes,
    sniff,
)

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_FRAME_PIXELS",
    "decode_frame",
    "decode_partial",
    "frame_bytes",
]


_DEFAULT_OPTIONS = DecodeOptions()


def decode_frame(
    data: bytes | bytearray | memoryview,
    params: PixelParams,
    options: DecodeOptions = _DEFAULT_OPTIONS,
    image_id: str | None = None,
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    *,
    registry: CodecRegistry | None = None,
) -> DecodedFrame:
    """Decode one frame into Cornerstone3D's pixel contract.

    ``data`` is one frame: raw samples in the syntax's byte order for native
    syntaxes (bit-packed when BitsAllocated is 1; deflated frames already
    inflated), or the complete codestream for encapsulated ones. It may be a
    memoryview at any offset. ``registry`` replaces the built-in codecs (tests
    pass a fresh one with some disabled).

    Raises :class:`ImageTooLargeError` (before decoding) for frames over
    ``max_frame_pixels``, or that need more than ``max_frame_bytes`` decoded (by
    the pixel module or by the codestream's header: see :func:`frame_bytes` and
    :attr:`~.syntaxes.CodestreamInfo.decode_bytes`),
    :class:`UnsupportedTransferSyntaxError` when no installed codec reads the
    syntax, and :class:`DecodeError` for corrupt or truncated data or data that
    does not match the pixel module (its size, samples per pixel or bits allocated).
    """
    start = time.perf_counter()
    _check_params(params, options, max_frame_pixels, max_frame_bytes, image_id)
    syntax = SYNTAXES.get(params.transfer_syntax_uid)
    if syntax is None:
        raise UnsupportedTransferSyntaxError(params.transfer_syntax_uid, image_id=image_id)
    limits = (max_frame_pixels, max_frame_bytes)
    level = options.decode_level
    try:
        decoded, codec = _decode(data, params, syntax, registry, limits, image_id, level)
        frame = _to_contract(decoded, params, options)
    except (ImageLoaderError, *CONTROL_FLOW):
        raise
    except BaseException as exc:  # the boundary: nothing foreign (not even a Rust panic) leaves
        raise DecodeError(
            f"could not decode the frame: {type(exc).__name__}: {exc}", image_id=image_id
        ) from exc
    return _decoded(frame, params, level, codec, start)


def _decoded(
    frame: tuple[npt.NDArray[Any], float, float, PreScale],
    params: PixelParams,
    level: int,
    codec: str,
    start: float,
) -> DecodedFrame:
    """The DecodedFrame of contract pixels, downsampled the rest of the way to ``level``
    where the codec reduced less (or not at all)."""
    pixels_out, lo, hi, prescale = frame
    if level:
        target = reduce.reduced_shape(params.rows, params.columns, level)
        if pixels_out.shape[:2] != target:
            pixels_out = reduce.downsample(pixels_out, *target)
            codec += "+downsample"
            lo, hi = float(pixels_out.min()), float(pixels_out.max())
    return DecodedFrame(
        pixels=pixels_out,
        min_value=lo,
        max_value=hi,
        color=pixels_out.ndim == 3,
        photometric_interpretation="RGB" if pixels_out.ndim == 3 else _grey_pi(params),
        prescale=prescale,
        decode_ms=(time.perf_counter() - start) * 1000.0,
        codec=codec,
        decode_level=level,
    )


def decode_partial(
    data: bytes | bytearray | memoryview,
    params: PixelParams,
    level: int,
    options: DecodeOptions = _DEFAULT_OPTIONS,
    image_id: str | None = None,
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> DecodedFrame:
    """The first part of an HTJ2K codestream (a frame still arriving) at decode ``level``.

    OpenJPH decodes the resolutions it needs from a codestream cut short (RPCL order
    puts them first): coarse while their code-blocks are still arriving, exact once
    they are in (the corpus CT, 512² lossless: a 128² image from the first 4 KiB,
    equal to the complete codestream's from 16 KiB, 9%). A reduction that may have
    wrapped (:func:`~.reduce.may_have_wrapped`) is refused like too little data.
    Raises DecodeError while too little has arrived (try again with more), and for
    any other syntax: there, no installed binding decodes a truncated codestream.
    """
    start = time.perf_counter()
    _check_params(params, options, max_frame_pixels, max_frame_bytes, image_id)
    syntax = SYNTAXES.get(params.transfer_syntax_uid)
    if syntax is None or syntax.family is not Family.HTJ2K or not level:
        raise DecodeError("only an HTJ2K frame decodes before it is complete", image_id=image_id)
    info = read_header(data, Family.HTJ2K)
    if info is None:
        raise DecodeError("the codestream's main header has not arrived", image_id=image_id)
    _check_header(info, data, params, (max_frame_pixels, max_frame_bytes), image_id)
    try:
        reduced = reduce.reduced_decode(Family.HTJ2K, data, params, info, level)
        if reduced is None:
            raise DecodeError(
                "no HTJ2K reduction to trust yet (none installed, or its samples may have wrapped)",
                image_id=image_id,
            )
        decoded, codec = reduced
        frame = _to_contract(decoded, params, options)
    except (ImageLoaderError, *CONTROL_FLOW):
        raise
    except BaseException as exc:
        raise DecodeError(
            f"not enough of the codestream yet: {type(exc).__name__}: {exc}", image_id=image_id
        ) from exc
    return _decoded(frame, params, level, codec + "/partial", start)


def _check_params(
    params: PixelParams,
    options: DecodeOptions,
    max_frame_pixels: int,
    max_frame_bytes: int,
    image_id: str | None,
) -> None:
    if params.rows <= 0 or params.columns <= 0:
        raise DecodeError(f"invalid frame size {params.rows}x{params.columns}", image_id=image_id)
    if params.rows * params.columns > max_frame_pixels:
        raise ImageTooLargeError(
            f"frame of {params.rows}x{params.columns} pixels exceeds the limit of "
            f"{max_frame_pixels} pixels",
            image_id=image_id,
        )
    if params.samples_per_pixel not in (1, 3, 4):
        raise DecodeError(
            f"unsupported SamplesPerPixel {params.samples_per_pixel}", image_id=image_id
        )
    if params.bits_allocated not in (1, 8, 16, 32) or not (
        0 < params.bits_stored <= params.bits_allocated
    ):
        raise DecodeError(
            f"unsupported BitsAllocated/BitsStored {params.bits_allocated}/{params.bits_stored}",
            image_id=image_id,
        )
    needed = frame_bytes(params, options)
    if needed > max_frame_bytes:
        raise ImageTooLargeError(
            f"frame of {params.rows}x{params.columns}x{params.samples_per_pixel} "
            f"({params.bits_allocated}-bit) needs {needed} bytes decoded, over the limit of "
            f"{max_frame_bytes} bytes (max_frame_bytes)",
            image_id=image_id,
        )


def frame_bytes(params: PixelParams, options: DecodeOptions = _DEFAULT_OPTIONS) -> int:
    """Bytes the pixel module says one frame needs decoded.

    The larger of its samples as a codec returns them (rows × columns × samples ×
    1, 2 or 4 bytes by BitsAllocated) and the pixels handed back: RGB(A) bytes for
    colour, and for greyscale the container the modality LUT's range calls for
    (float32 when the scaling has fractions).
    """
    pixel_count = params.rows * params.columns
    samples = pixel_count * params.samples_per_pixel * sample_bytes(params.bits_allocated)
    return max(samples, pixel_count * _output_pixel_bytes(params, options))


def _output_pixel_bytes(params: PixelParams, options: DecodeOptions) -> int:
    if params.samples_per_pixel > 1 or params.photometric_interpretation == "PALETTE COLOR":
        return 4 if options.use_rgba else 3
    stored = sample_bytes(params.bits_allocated)
    scaling = pixels.scaling_for(params) if options.prescale else None
    if scaling is None:
        return stored
    if not scaling.integral:
        return 4  # float32 (through a float64 working copy)
    # The container for the scaled range of every value BitsStored can hold: the
    # data's own range, a part of it, never needs a larger one.
    scaled = pixels.scaled_range(*pixels.stored_range(params), scaling)
    return pixels.dtype_for_range(*scaled).itemsize


def _decode(
    data: bytes | bytearray | memoryview,
    params: PixelParams,
    syntax: TransferSyntax,
    registry: CodecRegistry | None,
    limits: tuple[int, int],
    image_id: str | None,
    level: int = 0,
) -> tuple[CodecOutput, str]:
    """The frame's samples, ``(rows, columns[, samples])`` (smaller where a codec
    reduced them towards decode ``level``), and the name of the decoder."""
    family = syntax.family
    if family is Family.NATIVE:
        expected = pixels.native_length(params)
        size = memoryview(data).nbytes
        # A last odd-length frame may keep the even-length padding byte.
        if size == expected or (size == expected + 1 and expected % 2):
            return _native(data, params, syntax), "numpy"
        sniffed = sniff(data)
        if sniffed is None:
            raise DecodeError(
                f"frame has {size} bytes but the pixel module needs {expected}", image_id=image_id
            )
        family = sniffed
    info = read_header(data, family)
    if info is not None:
        _check_header(info, data, params, limits, image_id)
    problem = header_problem(data, family)
    if problem is not None:
        raise DecodeError(problem, image_id=image_id)
    if family is Family.RLE:
        _check_rle(data, params, image_id)
    elif not has_end_marker(data):
        raise DecodeError(
            f"truncated {family.value} codestream: no end marker (FF D9)", image_id=image_id
        )
    if level:
        reduced = _reduced(family, data, params, info, level)
        if reduced is not None:
            return reduced
    return (registry or shared_registry()).decode(family, data, params, info, image_id)


def _reduced(
    family: Family,
    data: bytes | bytearray | memoryview,
    params: PixelParams,
    info: CodestreamInfo | None,
    level: int,
) -> tuple[CodecOutput, str] | None:
    """The codec's own reduction (see :mod:`.reduce`), or None: decode in full instead
    (also when the reduction fails or gives a shape that is not on the way down)."""
    try:
        reduced = reduce.reduced_decode(family, data, params, info, level)
    except CONTROL_FLOW:
        raise
    except BaseException:  # a reduction that fails is not the frame's failure
        return None
    if reduced is None:
        return None
    out, name = reduced
    samples = out.pixels
    if samples.ndim == 3 and samples.shape[2] == 1:
        samples = samples[:, :, 0]
    on_the_way = {reduce.reduced_shape(params.rows, params.columns, k) for k in range(level + 1)}
    components = 1 if samples.ndim == 2 else samples.shape[2]
    if samples.shape[:2] not in on_the_way or components != params.samples_per_pixel:
        return None
    return CodecOutput(samples, out.photometric, out.precision), name


def _native(
    data: bytes | bytearray | memoryview, params: PixelParams, syntax: TransferSyntax
) -> CodecOutput:
    flat = pixels.native_samples(data, params, big_endian=syntax.big_endian)
    rows, columns, samples = params.rows, params.columns, params.samples_per_pixel
    pi = params.photometric_interpretation
    if samples == 1:
        return CodecOutput(flat.reshape(rows, columns), pi)
    if pi == "YBR_FULL_422" and samples == 3:
        flat = color.to_8bit(flat, params.bits_stored)
        return CodecOutput(color.ybr_full_422_to_rgb(flat, rows, columns), "RGB")
    shaped = color.interleave(flat, rows, columns, samples, params.planar_configuration)
    return CodecOutput(shaped, pi)


_DNL_FAMILIES = frozenset({Family.JPEG, Family.JPEG_LOSSLESS})


def _check_header(
    info: CodestreamInfo,
    data: bytes | bytearray | memoryview,
    params: PixelParams,
    limits: tuple[int, int],
    image_id: str | None,
) -> None:
    # The codestream's own header decides what a codec allocates: check it first.
    max_frame_pixels, max_frame_bytes = limits
    if info.rows * info.columns > max_frame_pixels:
        raise ImageTooLargeError(
            f"codestream claims {info.rows}x{info.columns} pixels, over the limit of "
            f"{max_frame_pixels}",
            image_id=image_id,
        )
    needed = info.decode_bytes
    if needed > max_frame_bytes:
        tiles = f" in {info.tiles} tiles" if info.tiles > 1 else ""
        raise ImageTooLargeError(
            f"codestream claims {info.rows}x{info.columns} pixels of {info.components} "
            f"{info.bits}-bit components{tiles}: decoding needs {needed} bytes, over the "
            f"limit of {max_frame_bytes} bytes (max_frame_bytes)",
            image_id=image_id,
        )
    rows = info.rows
    if rows == 0 and info.family in _DNL_FAMILIES:
        # A JPEG may leave the height to a DNL marker after the first scan. Without
        # one (or with another height) a codec decodes rows until memory runs out.
        rows = dnl_height(data) or 0
    if info.columns != params.columns or rows != params.rows:
        raise DecodeError(
            f"codestream is {rows}x{info.columns} but the pixel module says "
            f"{params.rows}x{params.columns}",
            image_id=image_id,
        )
    # A codec decodes what the codestream declares, and the result is refused only
    # afterwards if it does not fit the pixel module: refuse it before.
    if info.components != params.samples_per_pixel:
        raise DecodeError(
            f"codestream has {info.components} components but the pixel module says "
            f"SamplesPerPixel {params.samples_per_pixel}",
            image_id=image_id,
        )
    if info.bits > max(params.bits_allocated, 8):
        raise DecodeError(
            f"codestream has {info.bits}-bit samples but the pixel module says "
            f"BitsAllocated {params.bits_allocated}",
            image_id=image_id,
        )


def _check_rle(
    data: bytes | bytearray | memoryview, params: PixelParams, image_id: str | None
) -> None:
    # One segment per byte of each sample (PS3.5 G.2); each decodes to rows × columns.
    segments = rle_segment_count(data)
    expected = params.samples_per_pixel * sample_bytes(params.bits_allocated)
    if segments is not None and segments != expected:
        raise DecodeError(
            f"RLE header names {segments} segments but the pixel module needs {expected} "
            f"(SamplesPerPixel {params.samples_per_pixel}, BitsAllocated "
            f"{params.bits_allocated})",
            image_id=image_id,
        )


def _grey_pi(params: PixelParams) -> str:
    pi = params.photometric_interpretation
    return pi if pi in ("MONOCHROME1", "MONOCHROME2") else "MONOCHROME2"


def _to_contract(
    decoded: CodecOutput, params: PixelParams, options: DecodeOptions
) -> tuple[npt.NDArray[Any], float, float, PreScale]:
    samples = decoded.pixels
    no_scaling = PreScale(enabled=options.prescale, scaled=False, modality=params.modality)
    if params.photometric_interpretation == "PALETTE COLOR" and samples.ndim == 2:
        if params.palette is None or len(params.palette.red) == 0:
            raise ValueError("PALETTE COLOR frame without palette lookup tables")
        indices = pixels.stored_values(samples, params, decoded.precision)
        rgb = color.palette_to_rgb(indices, params.palette, options.use_rgba)
        return rgb, float(rgb.min()), float(rgb.max()), no_scaling
    if samples.ndim == 3:
        # Colour is unsigned by definition (PS3.3 C.7.6.3.1.2), whatever the header says.
        bits = min(params.bits_stored, decoded.precision or params.bits_stored)
        rgb = color.to_rgb(samples, decoded.photometric, bits, options.use_rgba)
        return rgb, float(rgb.min()), float(rgb.max()), no_scaling
    stored = pixels.stored_values(samples, params, decoded.precision)
    out, lo, hi, prescale = pixels.apply_modality_lut(stored, params, options.prescale)
    return np.ascontiguousarray(out), lo, hi, prescale
