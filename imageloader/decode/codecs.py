"""Codecs for encapsulated frames, tried in order of measured speed.

A :class:`Codec` wraps one decoder package behind one signature: codestream bytes
in, samples out as ``(rows, columns)`` or interleaved ``(rows, columns, samples)``.
A :class:`CodecRegistry` holds them in the order they are tried for each
:class:`~.syntaxes.Family`; every package is optional and imported only when a
frame needs it. :func:`default_registry` registers the built-ins explicitly —
importing this module imports no codec. The order comes from
``benchmarks/bench_codecs.py`` (see ``benchmarks/CODECS.md``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import DecodeError, UnsupportedTransferSyntaxError
from ..limits import DEFAULT_MAX_FRAME_PIXELS
from .color import interleave
from .params import PixelParams
from .syntaxes import CodestreamInfo, Family, jpeg_is_ycbcr, markers_say_ycbcr

__all__ = [
    "CONTROL_FLOW",
    "PILLOW_MAX_IMAGE_PIXELS",
    "Codec",
    "CodecOutput",
    "CodecRegistry",
    "Unsuited",
    "default_registry",
    "prepare_pillow",
]

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class CodecOutput:
    """Decoded samples and the photometric interpretation they are now in.

    ``photometric`` differs from the pixel module's when the codec converted the
    colour space (YCbCr JPEG, or JPEG 2000 with a multi-component transform, come
    out RGB). ``precision`` is the codestream's bits per sample, when known.
    """

    pixels: npt.NDArray[Any]
    photometric: str
    precision: int | None = None


DecodeFn = Callable[[Buffer, PixelParams, CodestreamInfo | None], CodecOutput]


@dataclass(frozen=True, slots=True)
class Codec:
    """One decoder: ``module`` is imported lazily; ``install`` is its pip package."""

    name: str
    families: frozenset[Family]
    module: str
    install: str
    decode: DecodeFn


#: What a codec may raise that is not its failure: these always propagate.
CONTROL_FLOW = (KeyboardInterrupt, SystemExit, GeneratorExit)


class Unsuited(Exception):
    """Raised by a codec for a frame it cannot handle (e.g. Pillow and 12-bit JPEG)."""


class CodecRegistry:
    """Codecs in the order they are tried; a fresh object per test, no globals.

    ``disable`` hides a codec as if its package were not installed.
    """

    def __init__(self, codecs: Iterable[Codec] = ()) -> None:
        self._codecs: list[Codec] = []
        self._disabled: set[str] = set()
        self._installed: dict[str, bool] = {}
        for codec in codecs:
            self.register(codec)

    def register(self, codec: Codec, *, first: bool = False) -> None:
        """Add a codec after the others (or before them, ``first=True``)."""
        if any(c.name == codec.name for c in self._codecs):
            raise ValueError(f"codec {codec.name!r} is already registered")
        self._codecs.insert(0 if first else len(self._codecs), codec)

    def disable(self, *names: str) -> None:
        """Treat these codecs as not installed."""
        self._disabled.update(names)

    def __iter__(self) -> Iterator[Codec]:
        """Every registered codec, in order (installed or not, enabled or not)."""
        return iter(list(self._codecs))

    def codecs(self, family: Family) -> list[Codec]:
        """The codecs for ``family``, in the order they are tried (installed or not)."""
        return [c for c in self._codecs if family in c.families]

    def available(self, codec: Codec) -> bool:
        """Whether the codec is enabled and its package importable (checked once, no import)."""
        if codec.name in self._disabled:
            return False
        found = self._installed.get(codec.module)
        if found is None:
            found = importlib.util.find_spec(codec.module) is not None
            self._installed[codec.module] = found
        return found

    def decode(
        self,
        family: Family,
        data: Buffer,
        params: PixelParams,
        info: CodestreamInfo | None,
        image_id: str | None = None,
    ) -> tuple[CodecOutput, str]:
        """Decode with the first codec that succeeds; returns the output and the codec's name.

        Raises :class:`UnsupportedTransferSyntaxError` when no codec for the family is
        installed, and :class:`DecodeError` listing every codec's reason when all fail.
        """
        reasons: list[str] = []
        missing: Codec | None = None  # the first codec that is not installed
        attempted = 0
        shape = _expected_shape(params)
        for codec in self.codecs(family):
            try:
                if not self.available(codec):
                    raise ImportError(f"not installed (pip install {codec.install})")
                out = codec.decode(data, params, info)
            except ImportError as exc:  # also imagecodecs built without this codec
                missing = missing or codec
                reasons.append(f"{codec.name}: {exc}")
                continue
            except CONTROL_FLOW:
                raise
            # Any codec failure: note it, try the next codec. A Rust codec's panic
            # (pylibjpeg-rle on a frame smaller than the pixel module says) is
            # pyo3's PanicException, a BaseException: a failure all the same.
            except BaseException as exc:
                attempted += 1
                detail = str(exc) if isinstance(exc, Unsuited) else f"{type(exc).__name__}: {exc}"
                reasons.append(f"{codec.name}: {detail}")
                continue
            attempted += 1
            pixels = out.pixels
            if pixels.ndim == 3 and pixels.shape[2] == 1:
                pixels = pixels[:, :, 0]
            if pixels.shape != shape:
                reasons.append(f"{codec.name}: decoded {pixels.shape}, expected {shape}")
                continue
            return CodecOutput(pixels, out.photometric, out.precision), codec.name
        if not attempted:
            raise UnsupportedTransferSyntaxError(
                params.transfer_syntax_uid,
                image_id=image_id,
                install=missing.install if missing else None,
                detail="; ".join(reasons) or f"no {family.value} decoder registered",
            )
        raise DecodeError(
            f"could not decode the {family.value} frame: " + "; ".join(reasons),
            image_id=image_id,
        )


def _expected_shape(params: PixelParams) -> tuple[int, ...]:
    if params.samples_per_pixel == 1:
        return (params.rows, params.columns)
    return (params.rows, params.columns, params.samples_per_pixel)


def _bytes(data: Buffer) -> bytes | bytearray:
    # Some bindings accept only bytes; a memoryview of a frame is copied (cheap).
    return data if isinstance(data, bytes | bytearray) else bytes(data)


def _precision(info: CodestreamInfo | None) -> int | None:
    return info.precision if info is not None else None


# -- JPEG (DCT and lossless) -------------------------------------------------------------


def _ic_jpeg8(data: Buffer, params: PixelParams, info: CodestreamInfo | None) -> CodecOutput:
    import imagecodecs

    if jpeg_is_ycbcr(info, params.photometric_interpretation, params.samples_per_pixel):
        pixels = imagecodecs.jpeg8_decode(_bytes(data), colorspace="YCbCr", outcolorspace="RGB")
        return CodecOutput(pixels, "RGB", _precision(info))
    if params.samples_per_pixel == 3:
        # Same colour space in and out: libjpeg-turbo leaves the samples alone.
        pixels = imagecodecs.jpeg8_decode(_bytes(data), colorspace="RGB", outcolorspace="RGB")
    else:
        pixels = imagecodecs.jpeg8_decode(_bytes(data))
    return CodecOutput(pixels, params.photometric_interpretation, _precision(info))


#: Pillow's decompression-bomb limit once :func:`prepare_pillow` has run: the default
#: ``max_frame_pixels`` (:data:`imageloader.limits.Limits.max_frame_pixels`, 2**28).
PILLOW_MAX_IMAGE_PIXELS = DEFAULT_MAX_FRAME_PIXELS


@functools.cache
def prepare_pillow() -> None:
    """Raise Pillow's decompression-bomb limit to ours, once per process.

    Pillow checks every image it opens against ``PIL.Image.MAX_IMAGE_PIXELS``
    (89 million pixels by default): it warns over the limit and raises over twice
    it. Our decoders check each image's header against the caller's
    ``max_frame_pixels`` themselves (2**28 by default) and raise
    :class:`~imageloader.errors.ImageTooLargeError`, so Pillow's check must not fire
    below that. The setting is process-wide, and changing it around each decode
    races with decodes on other threads; so it is raised here, once, to
    :data:`PILLOW_MAX_IMAGE_PIXELS` (left alone when already higher, or ``None``)
    and never changed again. Pillow's own checks (including those of the
    sub-images it sizes only while loading, in ICO and ICNS files) then stand at
    that value; a loader given a larger ``max_frame_pixels`` should raise
    ``PIL.Image.MAX_IMAGE_PIXELS`` (or set it to ``None``) itself.
    """
    from PIL import Image

    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < PILLOW_MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = PILLOW_MAX_IMAGE_PIXELS


def _pillow_jpeg(data: Buffer, params: PixelParams, info: CodestreamInfo | None) -> CodecOutput:
    from PIL import Image

    prepare_pillow()
    if info is not None and info.precision != 8:
        raise Unsuited(f"8-bit JPEG only, not {info.precision}-bit")
    ycbcr = jpeg_is_ycbcr(info, params.photometric_interpretation, params.samples_per_pixel)
    with Image.open(io.BytesIO(data), formats=("JPEG",)) as image:
        if params.samples_per_pixel == 3 and not ycbcr and info and markers_say_ycbcr(info) is None:
            image.draft("YCbCr", image.size)  # libjpeg would convert: keep the samples as stored
        pixels = np.asarray(image)
    return CodecOutput(pixels, "RGB" if ycbcr else params.photometric_interpretation, 8)


def _libjpeg(data: Buffer, params: PixelParams, info: CodestreamInfo | None) -> CodecOutput:
    from libjpeg.utils import decode

    ycbcr = jpeg_is_ycbcr(info, params.photometric_interpretation, params.samples_per_pixel)
    pixels = decode(_bytes(data), colour_transform=1 if ycbcr else 0)
    pi = "RGB" if ycbcr else params.photometric_interpretation
    return CodecOutput(pixels, pi, _precision(info))


class _OpenJphErrors:
    """Errors imagecodecs' OpenJPH binding cannot raise, seen through ``sys.unraisablehook``.

    ``htj2k_decode`` copies the decoded lines out in a Cython function declared
    ``noexcept``: when OpenJPH throws there (a corrupt code-block), the error cannot
    propagate. Cython prints it, hands it to ``sys.unraisablehook``, and the decode
    returns a half-filled array as if it had succeeded. Nothing in the codestream
    tells beforehand, so the hook is the only witness.

    This hook is installed once per process, the first time the codec runs, and
    stays: swapping the hook around each decode is not thread-safe (decodes run on
    several threads in daemonic processes, and interleaved swaps left the hook
    pointing at a finished decode's list). The hook runs on the thread that raised:
    while a thread decodes, what is raised on it goes to that decode; everything
    else goes on to the hook it replaced.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._installed = False
        #: The hook this one replaced: it gets every unraisable exception not collected.
        self.previous: Callable[[sys.UnraisableHookArgs], object] = sys.__unraisablehook__

    def __call__(self, unraisable: sys.UnraisableHookArgs) -> None:
        caught: list[sys.UnraisableHookArgs] | None = getattr(self._local, "caught", None)
        if caught is not None:
            caught.append(unraisable)
        else:
            self.previous(unraisable)

    @contextlib.contextmanager
    def collect(self) -> Iterator[list[sys.UnraisableHookArgs]]:
        """What the codec reports on this thread while the block runs.

        Raises :class:`Unsuited` if another hook has replaced this one since: the
        codec's errors would go unseen, so the next codec (OpenJPEG, which raises)
        decodes the frame instead.
        """
        if not self._installed:
            with self._lock:
                if not self._installed:
                    self.previous = sys.unraisablehook
                    sys.unraisablehook = self
                    self._installed = True
        if sys.unraisablehook is not self:
            raise Unsuited("sys.unraisablehook was replaced: OpenJPH's errors would go unseen")
        caught: list[sys.UnraisableHookArgs] = []
        self._local.caught = caught
        try:
            yield caught
        finally:
            self._local.caught = None


_OPENJPH_ERRORS = _OpenJphErrors()


def _imagecodecs(
    function: str, data: Buffer, params: PixelParams, info: CodestreamInfo | None
) -> CodecOutput:
    """An imagecodecs decoder that needs no options (bound with functools.partial)."""
    import imagecodecs

    decode = getattr(imagecodecs, function)
    if function == "htj2k_decode":
        with _OPENJPH_ERRORS.collect() as caught:
            pixels = decode(_bytes(data))
        if caught:
            raise RuntimeError(f"{function}: {caught[0].exc_value}")
    elif function == "jpeg2k_decode":
        # One thread: the decode pool already runs one worker per core.
        pixels = decode(_bytes(data), numthreads=1)
    else:
        pixels = decode(_bytes(data))
    pi = params.photometric_interpretation
    if info is not None and info.family in (Family.JPEG2000, Family.HTJ2K):
        pi = _j2k_photometric(params)
    return CodecOutput(pixels, pi, _precision(info))


def _ic_jpegsof3(data: Buffer, params: PixelParams, info: CodestreamInfo | None) -> CodecOutput:
    if info is None or info.rows == 0:
        # It cannot read a DNL marker: it returns no rows and corrupts the heap.
        raise Unsuited("imagecodecs' jpegsof3 needs the height in the frame header")
    return _imagecodecs("jpegsof3_decode", data, params, info)


# -- JPEG-LS -----------------------------------------------------------------------------


def _pyjpegls(data: Buffer, params: PixelParams, info: CodestreamInfo | None) -> CodecOutput:
    import jpeg_ls

    buffer, meta = jpeg_ls.decode_pixel_data(_bytes(data))
    bits = int(meta["bits_per_sample"])
    rows, columns, components = int(meta["height"]), int(meta["width"]), int(meta["components"])
    flat = np.frombuffer(buffer, dtype=np.uint8 if bits <= 8 else np.uint16)
    planar = 1 if meta["interleave_mode"] == 0 else 0  # mode 0: colour by plane
    pixels = interleave(flat, rows, columns, components, planar)
    return CodecOutput(pixels, params.photometric_interpretation, bits)


# -- JPEG 2000 and HTJ2K -----------------------------------------------------------------


def _j2k_photometric(params: PixelParams) -> str:
    # The codec applies the inverse multi-component transform itself.
    pi = params.photometric_interpretation
    return "RGB" if pi in ("YBR_RCT", "YBR_ICT") else pi


def _openjpeg(data: Buffer, params: PixelParams, info: CodestreamInfo | None) -> CodecOutput:
    from openjpeg.utils import decode

    pixels = decode(_bytes(data))
    return CodecOutput(pixels, _j2k_photometric(params), _precision(info))


# -- RLE ---------------------------------------------------------------------------------


def _rle_samples(buffer: Buffer | npt.NDArray[Any], params: PixelParams) -> npt.NDArray[Any]:
    # RLE decoders return each sample's plane in turn, little endian.
    flat = np.frombuffer(buffer, dtype=f"<u{max(1, params.bits_allocated // 8)}")
    rows, columns, samples = params.rows, params.columns, params.samples_per_pixel
    if flat.size != rows * columns * samples:
        raise ValueError(f"RLE frame holds {flat.size} samples, not {rows * columns * samples}")
    return interleave(flat, rows, columns, samples, planar=1)


def _ic_dicomrle(data: Buffer, params: PixelParams, info: CodestreamInfo | None) -> CodecOutput:
    import imagecodecs

    itemsize = max(1, params.bits_allocated // 8)
    # Into a buffer of the frame's size: imagecodecs sizes its output by the data
    # otherwise, and one segment can claim a gigabyte for a small frame.
    out = bytearray(params.rows * params.columns * params.samples_per_pixel * itemsize)
    buffer = imagecodecs.dicomrle_decode(_bytes(data), f"<u{itemsize}", out=out)
    return CodecOutput(_rle_samples(buffer, params), params.photometric_interpretation)


def _pylibjpeg_rle(data: Buffer, params: PixelParams, info: CodestreamInfo | None) -> CodecOutput:
    from rle.utils import decode_pixel_data

    buffer = decode_pixel_data(
        bytes(data),
        version=2,
        rows=params.rows,
        columns=params.columns,
        samples_per_pixel=params.samples_per_pixel,
        bits_allocated=params.bits_allocated,
    )
    return CodecOutput(_rle_samples(buffer, params), params.photometric_interpretation)


def _pydicom_rle(data: Buffer, params: PixelParams, info: CodestreamInfo | None) -> CodecOutput:
    from pydicom.encaps import encapsulate
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import RLELossless

    # pydicom's own (pure Python) RLE decoder, through its public API.
    options: dict[str, Any] = {
        "rows": params.rows,
        "columns": params.columns,
        "samples_per_pixel": params.samples_per_pixel,
        "bits_allocated": params.bits_allocated,
        "bits_stored": params.bits_stored,
        "pixel_representation": 0,  # sign handling is ours
        "photometric_interpretation": params.photometric_interpretation,
        "planar_configuration": 1 if params.samples_per_pixel > 1 else 0,
        "number_of_frames": 1,
    }
    pixels, _ = get_decoder(RLELossless).as_array(
        encapsulate([bytes(data)]), raw=True, decoding_plugin="pydicom", **options
    )
    return CodecOutput(pixels, params.photometric_interpretation)


# -- the built-ins -----------------------------------------------------------------------

_JPEG = frozenset({Family.JPEG})
_LOSSLESS = frozenset({Family.JPEG_LOSSLESS})
_ANY_JPEG = frozenset({Family.JPEG, Family.JPEG_LOSSLESS})
_J2K = frozenset({Family.JPEG2000, Family.HTJ2K})


def _ic(function: str) -> DecodeFn:
    return functools.partial(_imagecodecs, function)


def _builtins() -> list[Codec]:
    # Fastest first per family; see benchmarks/CODECS.md for the measurements.
    ic = "imagecodecs"
    return [
        Codec("imagecodecs-jpeg8", _ANY_JPEG, ic, ic, _ic_jpeg8),  # libjpeg-turbo 3
        Codec("pillow", _JPEG, "PIL", "Pillow", _pillow_jpeg),  # libjpeg-turbo, 8-bit
        Codec("imagecodecs-ljpeg", _LOSSLESS, ic, ic, _ic("ljpeg_decode")),
        Codec("imagecodecs-jpegsof3", _LOSSLESS, ic, ic, _ic_jpegsof3),
        Codec(
            "imagecodecs-jpegls", frozenset({Family.JPEG_LS}), ic, ic, _ic("jpegls_decode")
        ),  # CharLS
        Codec("pyjpegls", frozenset({Family.JPEG_LS}), "jpeg_ls", "pyjpegls", _pyjpegls),  # CharLS
        Codec(
            "pylibjpeg-libjpeg",
            _ANY_JPEG | {Family.JPEG_LS},
            "libjpeg",
            "pylibjpeg-libjpeg",
            _libjpeg,
        ),
        Codec(
            "imagecodecs-htj2k", frozenset({Family.HTJ2K}), ic, ic, _ic("htj2k_decode")
        ),  # OpenJPH
        Codec("imagecodecs-jpeg2k", _J2K, ic, ic, _ic("jpeg2k_decode")),  # OpenJPEG
        Codec("pylibjpeg-openjpeg", _J2K, "openjpeg", "pylibjpeg-openjpeg", _openjpeg),
        Codec("imagecodecs-dicomrle", frozenset({Family.RLE}), ic, ic, _ic_dicomrle),
        Codec("pylibjpeg-rle", frozenset({Family.RLE}), "rle", "pylibjpeg-rle", _pylibjpeg_rle),
        Codec("pydicom-rle", frozenset({Family.RLE}), "pydicom", "pydicom", _pydicom_rle),
    ]


def default_registry() -> CodecRegistry:
    """A new registry holding every built-in codec in its measured order."""
    return CodecRegistry(_builtins())


@functools.cache
def shared_registry() -> CodecRegistry:
    """The registry a worker uses when none is passed (one per process)."""
    return default_registry()
