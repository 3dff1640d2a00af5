"""Web images: PNG, JPEG and whatever else Pillow reads, over HTTP.

ImageIds, as Cornerstone's:

- ``http://host/a.png`` and ``https://host/a.jpg``: the URL is the imageId (its
  web image loader);
- ``web:https://host/a.png``: a ``web:`` prefix on the URL (Cornerstone3D's
  ``webLoader`` example).

The body is fetched over the loader's shared session and decoded by
:func:`decode_web_image` in the decode pool (never on the event loop). The image
follows Cornerstone's web loader: interleaved RGB uint8 (RGBA with ``use_rgba``),
``color`` True, min 0, max 255, window 256/128, spacing 1 (a default: a web image
has no calibration), slope 1, intercept 0. Greyscale keeps its samples, as a
medical PNG needs: mode ``L`` (and ``1``, as 0/255) gives uint8, 16-bit PNG
(``I;16``) uint16, ``I`` int32, ``F`` float32, each with its real min and max and a
window over that range. Every other mode (``P`` palette, ``LA``, ``PA``, ``RGBA``,
``CMYK``, ``YCbCr`` ...) converts to RGB(A) through Pillow; alpha is kept only
with ``use_rgba``. The EXIF orientation is applied (as browsers draw a JPEG);
animated formats give their first frame.

Decoding changes no process-wide state, so decodes may run on many threads at
once: the pixel limit is checked against the header here, and Pillow's own
decompression-bomb limit is raised once per process
(:func:`~imageloader.decode.codecs.prepare_pillow`). Pillow's warnings (a damaged
EXIF block, a malformed MPO ...) follow the process's warning filters: silencing
them for one decode would change the filters of every thread. Where the filters
make them errors, the decode fails with :class:`~imageloader.errors.DecodeError`.

Metadata modules (pixel, plane with ``using_default_values``, series with modality
``SC``, VOI, modality LUT) are registered under the imageId once it loads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .decode.codecs import prepare_pillow
from .decode.image import create_image
from .decode.params import DecodedFrame
from .errors import DecodeError, ImageLoaderError, ImageTooLargeError
from .image import Image, PreScale, default_window
from .imageid import http_url
from .limits import DEFAULT_MAX_FRAME_BYTES
from .metadata import (
    GeneralSeriesModule,
    ImagePixelModule,
    ImagePlaneModule,
    ModalityLutModule,
    VoiLutModule,
)
from .registry import split_scheme

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from .context import LoadContext, LoaderServices

__all__ = ["WebLoader", "WebPixels", "decode_web_image", "web_image_url"]

#: Pillow modes kept as one greyscale channel, and the array type each becomes.
_GREYSCALE: dict[str, np.dtype[Any]] = {
    "1": np.dtype(np.uint8),
    "L": np.dtype(np.uint8),
    "I;16": np.dtype(np.uint16),
    "I;16L": np.dtype(np.uint16),
    "I;16B": np.dtype(np.uint16),
    "I;16N": np.dtype(np.uint16),
    "I": np.dtype(np.int32),
    "F": np.dtype(np.float32),
}


def web_image_url(image_id: str) -> str:
    """The URL an ``http:``, ``https:`` or ``web:`` imageId names."""
    scheme, rest = split_scheme(image_id)
    url = rest if scheme == "web" else f"{scheme}:{rest}"
    http_url(url, image_id)
    return url


@dataclass(frozen=True, slots=True)
class WebPixels:
    """A decoded web image: the pixels and what the decode learnt about the source."""

    pixels: npt.NDArray[Any]
    color: bool
    min_value: float
    max_value: float
    #: Pillow's name of the format (``PNG``, ``JPEG`` ...) and mode of the source.
    format: str | None
    mode: str
    decode_ms: float


def _check_size(size: tuple[int, int], max_pixels: int, image_id: str) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels",
            image_id=image_id,
        )


def _pixels(image: PILImage, use_rgba: bool) -> tuple[npt.NDArray[Any], bool]:
    # np.array, not np.asarray: Pillow hands numpy a read-only view of its bytes,
    # and an image's pixels should be writable wherever it was decoded.
    dtype = _GREYSCALE.get(image.mode)  # (_handed_back_bytes follows these branches)
    if dtype is not None:
        if image.mode == "1":
            image = image.convert("L")
        return np.array(image, dtype=dtype), False
    # Palette and alpha modes go through RGBA so that transparency is honoured
    # (Pillow warns converting a palette with transparency straight to RGB).
    rgba = image.convert("RGBA") if use_rgba or "A" in image.mode or "P" in image.mode else None
    if use_rgba:
        assert rgba is not None
        return np.array(rgba), True
    rgb = (rgba if rgba is not None else image).convert("RGB")
    return np.array(rgb), True


#: Bytes per pixel Pillow holds for an image mode (4 for the modes not listed).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}


def _handed_back_bytes(mode: str, use_rgba: bool) -> int:
    """Bytes per pixel :func:`_pixels` returns for an image of ``mode``."""
    grey = _GREYSCALE.get(mode)
    if grey is not None:
        return grey.itemsize
    return 4 if use_rgba or "A" in mode or "P" in mode else 3


def _check_bytes(
    size: tuple[int, int], mode: str, use_rgba: bool, max_frame_bytes: int, image_id: str
) -> None:
    width, height = size
    decoded = _MODE_BYTES.get(mode, 2 if mode.startswith("I;16") else 4)
    handed_back = _handed_back_bytes(mode, use_rgba)
    needed = width * height * max(decoded, handed_back)
    if needed > max_frame_bytes:
        raise ImageTooLargeError(
            f"a {width}x{height} {mode} image needs {needed} bytes, over the limit of "
            f"{max_frame_bytes} bytes per frame",
            image_id=image_id,
        )


def decode_web_image(
    data: bytes,
    image_id: str,
    use_rgba: bool,
    max_frame_pixels: int,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> WebPixels:
    """Decode a web image's bytes (runs in a decode worker).

    The size and mode in the header are checked against ``max_frame_pixels`` and
    ``max_frame_bytes`` (what Pillow decodes, or what we hand back, whichever is
    more) before any pixel is decoded. Raises :class:`ImageTooLargeError` over the limit and
    :class:`DecodeError` for bytes that are not an image, or a truncated or corrupt one.
    """
    start = time.perf_counter()
    try:
        from PIL import Image as PILModule
        from PIL import ImageOps
    except ImportError as exc:  # pragma: no cover - Pillow is in the web extra
        raise DecodeError("web images need Pillow: install imageloader[web]") from exc
    prepare_pillow()
    try:
        with PILModule.open(BytesIO(data)) as opened:
            # open() has read the header alone: refuse a bomb before decoding it.
            _check_size(opened.size, max_frame_pixels, image_id)
            _check_bytes(opened.size, opened.mode, use_rgba, max_frame_bytes, image_id)
            source_format, source_mode = opened.format, opened.mode
            opened.load()
            # ICO and ICNS take the size of the sub-image they load.
            _check_size(opened.size, max_frame_pixels, image_id)
            pixels, color = _pixels(ImageOps.exif_transpose(opened), use_rgba)
    except ImageLoaderError:
        raise
    except (PILModule.DecompressionBombError, PILModule.DecompressionBombWarning) as exc:
        # Pillow's own check (see prepare_pillow): over twice its limit, or over it
        # where the process's warning filters make its warning an error.
        raise ImageTooLargeError(
            f"image over the limit of {max_frame_pixels} pixels ({exc})", image_id=image_id
        ) from exc
    except Exception as exc:  # Pillow's OSError, SyntaxError, ValueError, zlib.error ...
        raise DecodeError(
            f"not a readable image: {type(exc).__name__}: {exc}", image_id=image_id
        ) from exc
    if color:
        lo, hi = 0.0, 255.0  # Cornerstone's web loader reports the full 8-bit range
    elif pixels.size:
        # fmin/fmax skip NaN (a float TIFF may hold some) without a warning.
        lo, hi = float(np.fmin.reduce(pixels, axis=None)), float(np.fmax.reduce(pixels, axis=None))
        if np.isnan(lo):
            lo = hi = 0.0
    else:
        lo = hi = 0.0
    decode_ms = (time.perf_counter() - start) * 1000.0
    return WebPixels(pixels, color, lo, hi, source_format, source_mode, decode_ms)


def _modules(decoded: WebPixels, window: tuple[float, float]) -> dict[str, Any]:
    rows, columns = int(decoded.pixels.shape[0]), int(decoded.pixels.shape[1])
    bits = 8 if decoded.color else decoded.pixels.dtype.itemsize * 8
    return {
        "imagePixelModule": ImagePixelModule(
            samples_per_pixel=3 if decoded.color else 1,
            photometric_interpretation="RGB" if decoded.color else "MONOCHROME2",
            rows=rows,
            columns=columns,
            bits_allocated=bits,
            bits_stored=bits,
            high_bit=bits - 1,
            pixel_representation=0 if decoded.pixels.dtype.kind == "u" else 1,
            smallest_pixel_value=decoded.min_value,
            largest_pixel_value=decoded.max_value,
        ),
        # A web image has no geometry: Cornerstone's defaults, flagged as such so a
        # viewer measures in pixels.
        "imagePlaneModule": ImagePlaneModule(
            rows=rows,
            columns=columns,
            image_orientation_patient=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
            row_cosines=(1.0, 0.0, 0.0),
            column_cosines=(0.0, 1.0, 0.0),
            image_position_patient=(0.0, 0.0, 0.0),
            pixel_spacing=(1.0, 1.0),
            row_pixel_spacing=1.0,
            column_pixel_spacing=1.0,
            using_default_values=True,
        ),
        "generalSeriesModule": GeneralSeriesModule(modality="SC"),
        "voiLutModule": VoiLutModule(window_center=(window[1],), window_width=(window[0],)),
        "modalityLutModule": ModalityLutModule(rescale_slope=1.0, rescale_intercept=0.0),
    }


class WebLoader:
    """The ``http:``, ``https:`` and ``web:`` loader (it holds nothing between loads)."""

    def __init__(self, services: LoaderServices) -> None:
        pass

    async def aclose(self) -> None:
        """Nothing to release."""

    async def load(self, image_id: str, ctx: LoadContext) -> Image:
        """Fetch the image and decode it in the decode pool."""
        url = web_image_url(image_id)
        response = await ctx.http.get(url, image_id=image_id)
        try:
            decoded = await ctx.decode_pool.run(
                decode_web_image,
                response.body,
                image_id,
                ctx.options.use_rgba,
                ctx.limits.max_frame_pixels,
                ctx.limits.max_frame_bytes,
                request_type=ctx.request_type,
                priority=ctx.priority,
            )
        except DecodeError as exc:
            if response.content_type:
                # What the server said it sent is the best clue (an HTML error page, say).
                raise DecodeError(
                    f"{exc.message} (Content-Type: {response.content_type})", image_id=image_id
                ) from exc
            raise
        window = (
            (256.0, 128.0)
            if decoded.color
            else default_window(decoded.min_value, decoded.max_value)
        )
        modules = _modules(decoded, window)
        ctx.metadata.store.add(image_id, modules)
        frame = DecodedFrame(
            pixels=decoded.pixels,
            min_value=decoded.min_value,
            max_value=decoded.max_value,
            color=decoded.color,
            photometric_interpretation="RGB" if decoded.color else "MONOCHROME2",
            prescale=PreScale(),
            decode_ms=decoded.decode_ms,
            codec="pillow",
        )
        return create_image(image_id, frame, modules)
